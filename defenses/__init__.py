"""Built-in defense plugins. Every public module here registers itself in `registry.DEFENSES`."""
