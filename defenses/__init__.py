"""Built-in defense plugins.

The modules in `PLUGINS` register themselves in `registry.DEFENSES` when the registry first
loads; `defenses.color_ops` is a building block (batched colour operations), and `defenses.st`
is Progressive Staged Training with its ACM, learning-rate rules and calibration.
"""

PLUGINS = ("standard", "filters", "augment", "adversarial", "st")
"""The modules that register defenses (the registry imports these, and only these)."""
