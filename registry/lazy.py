"""Deferred imports, so that plugin modules can be imported (and listed) without torch.

`uebench list attacks` imports every attack module to read its registration; paying
2 s for `import torch` and 5 s for `import timm` there would make listing slow. A plugin
writes ``torch = lazy_import("torch")`` at the top and uses ``torch.*`` as usual; the real
import happens on the first attribute access, i.e. when work actually starts.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def lazy_import(name: str) -> types.ModuleType:
    """Return module ``name``, importing it for real on first attribute access.

    If the module is already imported it is returned as is. Uses the stdlib
    `importlib.util.LazyLoader` recipe.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
