"""Every registered defense through the real trainer, stacks in configs, and robust columns in rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import DATA

from bench.config import ConfigError, parse_matrix
from bench.configfile import load_matrix
from bench.defense import DefenseStack
from bench.models import create_model
from bench.train_config import TrainConfig
from bench.trainer import fit
from registry import DEFENSES, RegistryError

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]

# Cheap settings for the smoke run; every other param keeps its default.
FAST = {
    "at": {"steps": 2},
    "st": {"embedding": "pca", "val_per_class": 5},
    "st-cg": {"embedding": "pca", "val_per_class": 5},
    "st-full": {"embedding": "pca", "val_per_class": 5, "finetune_epochs": 1},
}




@pytest.mark.parametrize("name", DEFENSES.list())
def test_every_defense_trains_and_reports_final_and_peak(name, mini):
    tr = mini.train.subset(torch.arange(0, 2000, 8))
    te = mini.test.subset(torch.arange(0, 500, 5))
    stack = DefenseStack.build([(name, FAST.get(name, {}))])
    assert stack.cost >= 1.0
    torch.manual_seed(0)
    held = mini.train.subset(torch.arange(4, 2000, 40))  # clean images outside tr, for the defenses that use some
    res = fit(create_model("mlp", num_classes=10), tr, te, TrainConfig(epochs=2, batch_size=50, lr=0.05), stack, seed=0, holdout=held)
    kept = [(c["test_acc"], c["epoch"]) for c in res.curve if c["action"] != "rollback"]
    assert 0.0 <= res.clean_acc_final <= 1.0 and res.curve[-1]["train_loss"] > 0
    if kept:  # the peak (and its epoch) over the models training kept: early stopping's number
        assert (res.clean_acc_peak, res.peak_epoch) == max(kept, key=lambda t: (t[0], -t[1]))
    assert res.epochs_run == len(res.curve) == 2 + sum(s["epochs"] for s in stack.extra_stages())
    json.dumps(res.extra)  # the defense_report column is JSON


def test_a_config_names_stacks_and_labels_them():
    m = parse_matrix(
        {
            "datasets": ["cifar10-mini"],
            "attacks": ["none"],
            "archs": ["mlp"],
            "defenses": ["standard", ["grayscale", "mixup"], {"name": "bdr", "params": {"bits": 4}}, "at", "st"],
        }
    )
    assert [m.defense_label(list(s)) for s in m.defenses] == ["standard", "grayscale+mixup", "bdr[bits=4]", "at", "st"]
    with pytest.raises(ConfigError, match=r"defenses\[0\]\[1\]: unknown defense 'mixupp'; did you mean 'mixup'"):
        parse_matrix({"datasets": ["cifar10-mini"], "attacks": ["none"], "archs": ["mlp"], "defenses": [["grayscale", "mixupp"]]})
    with pytest.raises(ConfigError, match=r"defenses\[0\]\[0\]: defense 'at': steps: "):
        parse_matrix({"datasets": ["cifar10-mini"], "attacks": ["none"], "archs": ["mlp"], "defenses": [{"name": "at", "params": {"steps": 0}}]})
    with pytest.raises(ValueError, match=r"st and st-cg both override param_groups; use one"):
        DefenseStack.build([("st", {}), ("st-cg", {})])
    # a filter, an augmentation and a training procedure compose; costs multiply
    stack = DefenseStack.build([("grayscale", {}), ("mixup", {}), ("at", {"steps": 7})])
    assert stack.cost == 8.0


def test_the_cpu_configs_cross_attacks_with_the_defense_family():
    """repro_cpu (the seed papers' defenses) and coverage_cpu (the field's attacks against
    APBench's main defenses) parse, and cross what their comments say they cross."""
    from bench.plan import plan

    repro = load_matrix(REPO / "configs" / "repro_cpu.yaml")
    defenses = {d.name for c in plan(repro).cells for d in c.defense}
    assert {"standard", "grayscale", "bdr", "jpeg", "mixup", "at", "st", "st-cg", "st-full"} <= defenses
    named = {"none", "random", "em-sample", "em-class", "uleo-gray", "uleo-augs", "uleo-grayaugs", "em-mlp"}
    assert named <= {c.poison.attack.name for c in plan(repro).cells if c.poison.attack}  # the fidelity issue's attack list
    assert any(d.name == "bdr" and DEFENSES.validate("bdr", d.params).bits == 2 for sub in repro.matrices() for s in sub.defenses for d in s)
    cover = load_matrix(REPO / "configs" / "coverage_cpu.yaml")
    cells = plan(cover).cells
    assert {"tap", "hypo", "rem-cpu", "ar", "cuda", "lsp", "ops", "em-sample"} <= {c.poison.attack.name for c in cells}
    assert {"standard", "iss-gray", "iss-jpeg", "bdr", "at", "ueraser", "st-full"} == {d.name for c in cells for d in c.defense}
    pairs = {(c.poison.attack.name, c.defense[0].name) for c in cells}
    assert len(cells) == len(pairs) == 10 * 7  # every attack x every defense, once


def test_run_records_robust_accuracy_cost_and_report(tmp_path):
    from bench.results import read_rows
    from bench.scheduler import run_matrix

    m = parse_matrix(
        {
            "name": "robust_probe",
            "datasets": [{"name": "cifar10-mini", "n_train": 200, "n_test": 100}],
            "attacks": ["none"],
            "archs": ["mlp"],
            "defenses": [["grayscale", "mixup"], {"name": "at", "params": {"steps": 1}}],
            "train": {"epochs": 1, "batch_size": 50, "lr": 0.05},
            "robust": {"n_test": 50, "pgd_steps": 2},
        }
    )
    summary = run_matrix(m, tmp_path / "results", DATA, cache_dir=tmp_path / "cache")
    assert summary.failed == 0, [r.error for r in summary.rows]
    rows = {r.defense: r for r in read_rows(tmp_path / "results" / "robust_probe.csv")}
    assert set(rows) == {"grayscale+mixup", "at[steps=1]"}
    for r in rows.values():
        assert r.robust_acc_fgsm is not None and r.robust_acc_pgd20 is not None
        assert r.clean_acc_peak is not None and r.peak_epoch == 0
    assert rows["at[steps=1]"].defense_cost == 2.0
    assert json.loads(rows["at[steps=1]"].defense_report)["at"]["steps"] == 1


def test_unknown_defense_params_fail_with_one_line():
    with pytest.raises(RegistryError, match=r"^defense 'mixup': alpah: unknown field$"):
        DEFENSES.create("mixup", alpah=1.0)
