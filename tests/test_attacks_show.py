"""`uebench show poison`: the clean | amplified δ | poisoned montage of a real poison."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA, run_cli
from PIL import Image

from bench.show import Layout, parse_params, pick_per_class, show_poison


def tile(img: np.ndarray, row: int, group: int, which: int, lay: Layout = Layout()) -> np.ndarray:
    """The (row, image ``group``, column ``which``) tile of a montage, at 1x."""
    th = tw = 32 * lay.zoom
    x0 = lay.label_width + group * (3 * tw + 2 * lay.gap + lay.group_gap) + which * (tw + lay.gap)
    y0 = lay.header + row * (th + lay.gap)
    return img[y0 : y0 + th : lay.zoom, x0 : x0 + tw : lay.zoom]


def test_show_poison_writes_the_montage(tmp_path, mini):
    out = tmp_path / "random.png"
    path, stats = show_poison("random", {"mode": "class", "epsilon": 8}, "cifar10-mini", None, 2, out, DATA)
    assert path == out and stats["threat"] == "linf=8/255"
    img = np.asarray(Image.open(out).convert("RGB"))
    lay = Layout()
    assert img.shape[0] == lay.header + 10 * (32 * lay.zoom + lay.gap)  # one row per class
    first = pick_per_class(mini.train.y, 10, 2)
    for k in (0, 9):
        clean = mini.train.x[int(first[k, 1])].permute(1, 2, 0).numpy()
        assert np.array_equal(tile(img, k, 1, 0), clean)  # column 1: the clean image
        poisoned = tile(img, k, 1, 2).astype(int)
        diff = poisoned - clean.astype(int)
        assert 0 < np.abs(diff).max() <= 8  # column 3: the published poison, within ε
        # column 2: the published change amplified by 255/ε around mid-gray
        expected = np.clip(np.round((diff / 8 * 0.5 + 0.5) * 255), 0, 255)
        assert np.array_equal(tile(img, k, 1, 1), expected.astype(np.uint8))
    # class-wise noise: both images of a class show the same δ wherever neither clips
    a, b = (mini.train.x[int(first[3, j])].permute(1, 2, 0).numpy().astype(int) for j in (0, 1))
    inside = (a >= 8) & (a <= 247) & (b >= 8) & (b <= 247)
    assert inside.mean() > 0.5
    assert np.array_equal(tile(img, 3, 0, 1)[inside], tile(img, 3, 1, 1)[inside])


def test_show_poison_cli(tmp_path):
    out = tmp_path / "ops.png"
    proc = run_cli("show", "poison", "ops", "--n", "1", "--out", str(out), "--data-root", str(DATA))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists() and "l0=1 px" in proc.stdout
    bad = run_cli("show", "poison", "ops", "--param", "pixels", "--out", str(out))
    assert bad.returncode == 2 and "--param: expected key=value" in bad.stderr
    typo = run_cli("show", "poison", "opz", "--out", str(out))
    assert typo.returncode == 2 and "unknown attack 'opz'; did you mean 'ops'" in typo.stderr


def test_parse_params_reads_yaml_values():
    assert parse_params(["epsilon=8", "gray=true", "source_arch=mlp", "source_model_kwargs={width: 4}"]) == {
        "epsilon": 8, "gray": True, "source_arch": "mlp", "source_model_kwargs": {"width": 4},
    }
    with pytest.raises(ValueError, match="--param: expected key=value"):
        parse_params(["epsilon"])
