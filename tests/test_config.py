"""Matrix configs: validated whole, before any work, with one-line errors."""
from __future__ import annotations

import pytest
from conftest import REPO

from bench.config import ConfigError, parse_matrix
from bench.configfile import load_matrix

BASE = {"datasets": ["cifar10-mini"], "attacks": ["none"], "archs": ["mlp"]}


def err(raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_matrix(raw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_shorthand_forms_expand():
    m = parse_matrix(
        {**BASE, "attacks": ["none", {"name": "random", "params": {"mode": "class"}}], "defenses": ["standard", ["grayscale"], ["grayscale", "mixup"]]}
    )
    assert [m.attack_label(a) for a in m.attacks] == ["none", "random[mode=class]"]
    assert [len(s) for s in m.defenses] == [1, 1, 2]
    assert m.train.epochs == 60 and m.apply.mode == "signed"


def test_misspelled_top_level_key_names_field_and_allowed():
    msg = err({**BASE, "trian": {"epochs": 1}})
    assert "trian: unknown field; did you mean 'train'?" in msg and "allowed:" in msg


def test_misspelled_nested_key():
    msg = err({**BASE, "train": {"epoch": 3}})
    assert "train.epoch: unknown field; did you mean 'epochs'?" in msg


def test_unknown_plugin_and_bad_params():
    assert "unknown attack 'randon'; did you mean 'random'" in err({**BASE, "attacks": ["randon"]})
    assert "unknown defense" in err({**BASE, "defenses": ["standrad"]})
    assert "unknown dataset" in err({**BASE, "datasets": ["cifar11"]})
    msg = err({**BASE, "attacks": [{"name": "random", "params": {"epsilon": 0}}]})
    assert "attacks[0]: attack 'random': epsilon: Input should be greater than 0" in msg
    assert "mode: Input should be 'sample' or 'class'" in err({**BASE, "attacks": [{"name": "random", "params": {"mode": "pixel"}}]})


def test_value_ranges():
    assert "poison_ratio" in err({**BASE, "poison_ratio": 0})
    assert "device" in err({**BASE, "device": "tpu"})
    assert "apply.mode" in err({**BASE, "apply": {"mode": "clip"}})


def test_duplicate_attacks_are_rejected():
    assert "duplicate entries ['random']" in err({**BASE, "attacks": ["random", {"name": "random", "params": {"epsilon": 8}}]})


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [cifar10-mini\nattacks: none\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_matrix(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_matrix(tmp_path / "missing.yaml")


def test_shipped_configs_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        m = load_matrix(path)
        assert m.name == path.stem


def test_blocks_are_experiments_of_one_matrix():
    """Each block crosses its own attacks / defenses / ratios with the shared training settings;
    a cell two blocks share is planned once; a block is validated like a matrix."""
    from bench.plan import plan

    m = parse_matrix({
        **BASE, "seeds": [0, 1],
        "blocks": [
            {"label": "gray", "attacks": ["none", "random"], "defenses": ["standard", "grayscale"]},
            {"label": "partial", "attacks": ["random"], "poison_ratios": [0.5, 1.0], "clean_baseline": True},
        ],
    })
    p = plan(m)
    assert len(p.cells) == 2 * (4 + 2) and len(p.by_key) == len(p.cells)  # random@100 % is shared by both blocks
    assert {c.poison.label for c in p.cells} == {"none", "random", "clean-only"}
    assert {c.poison.poison_ratio for c in p.cells} == {0.5, 1.0}
    assert len({c.spec for c in p.cells}) == len(p.cells)
    # --only block=LABEL selects a block's cells; a shared cell belongs to both blocks
    from bench.status import select

    shared = [c for c in p.cells if c.blocks == ("gray", "partial")]
    assert {(c.poison.label, c.poison.poison_ratio, c.defense_label) for c in shared} == {("random", 1.0, "standard")}
    assert len(select(p.cells, {"block": ["gray"]})) == 2 * 4 and len(select(p.cells, {"block": ["part*"]})) == 2 * 3
    assert select(p.cells, {"block": ["gray"], "defense": ["grayscale"]}) == [c for c in p.cells if c.defense_label == "grayscale"]
    assert select(p.cells, {"block": ["nope"]}) == []
    unlabelled = parse_matrix({**BASE, "blocks": [{"attacks": ["none"]}, {"attacks": ["random"]}]})
    assert unlabelled.block_labels() == ["0", "1"] and parse_matrix(BASE).block_labels() == [""]
    assert "blocks[1]: poison_ratio and poison_ratios" in err({**BASE, "blocks": [{"attacks": ["none"]}, {"poison_ratio": 0.5, "poison_ratios": [0.2]}]})
    assert "blocks[0]: train: not a block field" in err({**BASE, "blocks": [{"train": {"epochs": 1}}]})


def test_a_derived_config_is_its_base_with_its_assignments(tmp_path):
    """`base:` + `set:` gives the base's matrix with one field changed, under its own name;
    the shipped subset-seed variant of repro_cpu differs from it in the data subset only."""
    base = load_matrix(REPO / "configs" / "repro_cpu.yaml")
    derived = load_matrix(REPO / "configs" / "repro_cpu_subset1.yaml")
    assert derived.name == "repro_cpu_subset1"
    assert [d.subset_seed for d in derived.datasets] == [1]
    as_base = derived.model_copy(update={"name": base.name, "datasets": base.datasets})
    assert as_base.model_dump() == base.model_dump()
    (tmp_path / "a.yaml").write_text("base: b.yaml\nset: ['train.epochs=3']\n")
    (tmp_path / "b.yaml").write_text((REPO / "configs" / "quick.yaml").read_text())
    assert load_matrix(tmp_path / "a.yaml").train.epochs == 3


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": "base: missing.yaml\n"}, "base: no config file"),
        ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "a cycle"),
        ({"a.yaml": "set: ['train.epochs=3']\n"}, "only a config with a base: has set:"),
        ({"a.yaml": "base: b.yaml\nset: train.epochs=3\n", "b.yaml": "name: b\n"}, "set: expected a list"),
        ({"a.yaml": "base: b.yaml\nset: ['nowhere.9=1']\n", "b.yaml": "nowhere: [1]\n"}, "expected a list index"),
    ],
)
def test_a_broken_base_chain_fails_in_one_line(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as e:
        load_matrix(tmp_path / "a.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_st_pca_config_trains_on_repro_cpus_own_poison():
    """configs/st_pca_cpu.yaml compares PCA against the t-SNE rows of repro_cpu: that only
    means something on the same data, poison, training and τ, β; a drifted copy fails here."""
    from bench.plan import plan

    def cells(name):
        return [c for c in plan(load_matrix(REPO / "configs" / name)).cells if c.seed == 0 and c.poison.poison_ratio == 1.0
                and not c.poison.clean_only and c.defense[0].name in ("st", "st-cg", "st-full")]

    tsne, pca = cells("repro_cpu.yaml"), cells("st_pca_cpu.yaml")
    assert len(tsne) == len(pca) == 6
    assert {c.poison.key for c in tsne} == {c.poison.key for c in pca}
    strip = lambda c: (c.defense[0].name, c.arch, c.poison.label,
                       {k: v for k, v in c.defense[0].params.items() if k not in ("embedding", "tsne_iters", "calibration")})
    assert sorted(map(repr, map(strip, tsne))) == sorted(map(repr, map(strip, pca)))
    assert {c.defense[0].params["embedding"] for c in pca} == {"pca"}
