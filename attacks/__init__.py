"""Built-in attack plugins. Every public module here registers itself in `registry.ATTACKS`."""
