"""Built-in defense plugins.

The modules in `PLUGINS` register themselves in `registry.DEFENSES` when the registry first
loads; `defenses.color_ops` is a building block (batched colour operations), and `defenses.st`
is Progressive Staged Training with its ACM, learning-rate rules and calibration.
`defenses.iss` names the filter combinations of the ISS and DUNE papers; `defenses.ueraser` and
`defenses.coin` are the UEraser and COIN exploiters.
"""

PLUGINS = ("standard", "filters", "iss", "augment", "adversarial", "ueraser", "coin", "st")
"""The modules that register defenses (the registry imports these, and only these)."""
