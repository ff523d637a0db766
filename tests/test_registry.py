"""The plugin registry: wildcards, duplicates, unknown names, params validation, entry points."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pydantic import BaseModel, ConfigDict

from registry import ATTACKS, DEFENSES, Registry, RegistryError


class P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    k: int = 3


def make_registry() -> Registry:
    reg = Registry("widget")
    for name in ("alpha-one", "alpha-two", "beta"):
        reg.register(name, params=P, description=f"{name} widget")(lambda p, _n=name: (_n, p.k))
    return reg


def test_list_with_wildcards():
    reg = make_registry()
    assert reg.list() == ["alpha-one", "alpha-two", "beta"]
    assert reg.list("alpha-*") == ["alpha-one", "alpha-two"]
    assert reg.list("*-t?o") == ["alpha-two"]
    assert reg.list(["beta", "*one"]) == ["alpha-one", "beta"]
    assert reg.list("gamma*") == []


def test_duplicate_name_raises():
    reg = make_registry()
    with pytest.raises(RegistryError, match="'beta' is already registered"):
        reg.register("beta", params=P, description="again")(lambda p: None)


def test_unknown_name_suggests_closest():
    reg = make_registry()
    with pytest.raises(RegistryError) as err:
        reg.get("alpha-tow")
    msg = str(err.value)
    assert "unknown widget 'alpha-tow'" in msg and "'alpha-two'" in msg and "\n" not in msg


def test_create_validates_params_before_building():
    built = []
    reg = Registry("widget")
    reg.register("w", params=P, description="w")(lambda p: built.append(p) or p)
    assert reg.create("w", k=5).k == 5
    with pytest.raises(RegistryError, match=r"widget 'w': k: Input should be a valid integer"):
        reg.create("w", k="many")
    with pytest.raises(RegistryError, match=r"kk: unknown field"):
        reg.create("w", kk=1)
    assert len(built) == 1  # the invalid calls never reached the factory


def test_builtin_plugins_are_registered():
    assert {"none", "random"} <= set(ATTACKS.list())
    assert "standard" in DEFENSES.list()
    threat = ATTACKS.get("random").meta["threat"]
    assert (threat.norm, threat.budget_field) == ("linf", "epsilon")


def test_listing_does_not_import_torch():
    code = (
        "import sys, registry\n"
        "registry.ATTACKS.list(); registry.DEFENSES.list(); registry.DATASETS.list()\n"
        "print('torch._C' in sys.modules, 'timm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_entry_point_plugin_from_an_installed_package(tmp_path):
    """A throwaway distribution (dist-info with an entry point) on sys.path adds an attack."""
    site = tmp_path / "site"
    pkg = site / "ue_extra"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from pydantic import BaseModel, ConfigDict
            from bench.attack import Attack
            from bench.perturbation import Perturbation
            from bench.threat import ThreatModel
            from registry import ATTACKS

            class Params(BaseModel):
                model_config = ConfigDict(extra="forbid", frozen=True)
                epsilon: float = 4.0

            @ATTACKS.register("const-shift", params=Params, description="Adds +epsilon everywhere",
                              threat=ThreatModel("linf", "epsilon"))
            class ConstShift(Attack):
                def generate(self, train, ctx):
                    import torch
                    return Perturbation(torch.full((train.num_classes, *train.x.shape[1:]), self.params.epsilon / 255), "class")
            '''
        )
    )
    dist = site / "ue_extra-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ue-extra\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[uebench.attacks]\nconst-shift = ue_extra\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.cli", "list", "attacks", "const*"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("const-shift") and "ue-extra==0.3" in out.stdout
    code = (
        "import registry\n"
        "a = registry.ATTACKS.create('const-shift', epsilon=2)\n"
        "print(a.params.epsilon, registry.ATTACKS.get('const-shift').source)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["2.0", "ue-extra==0.3"]
