"""Built-in attack plugins.

The modules in `PLUGINS` register themselves in `registry.ATTACKS` when the registry first
loads; the other modules are building blocks shared by several families (`attacks.source`:
the source model; `attacks.delta`: the PGD-optimized δ; `attacks.views`: batches of the
clean images).
"""

PLUGINS = ("none", "random_noise", "em", "error_max", "rem", "ops", "lsp", "ar", "cuda", "external")
"""The modules that register attacks (the registry imports these, and only these)."""
