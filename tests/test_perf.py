"""Every benchmark of `python -m bench.perf` runs end to end at a tiny size and prints its
table (its numbers are for docs/PERFORMANCE.md, not for assertions: speed claims live in the
benchmarks, never in timed tests). A benchmark that rots when the code under it changes
fails here rather than on the day someone measures."""
from __future__ import annotations

import pytest
from conftest import CIFAR10, FULL_COPY_REASON, SHARED_DATA

from bench.perf.__main__ import BENCHMARKS, main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "trainer": ["--n", "256", "--batch-size", "64", "--epochs", "1", "--min-seconds", "0", "--reps", "1"],
    "em": ["--n", "64", "--rounds", "1", "--reps", "1", "--pgd-steps", "1", "--batch-size", "32", "--train-steps", "2"],
    "at": ["--n", "64", "--epochs", "1", "--reps", "1", "--steps", "1", "--batch-size", "32"],
    "st": ["--n", "200", "--epochs", "1", "--val-per-class", "5"],
    "scheduler": ["--dims", "2,2,2,2"],
    "scaling": ["--sizes", "100,200", "--epochs", "1", "--pgd-steps", "1", "--data-root", str(SHARED_DATA)],
    "store": ["--rows", "40", "--block", "10", "--sizes", "10,20", "--samples", "1"],
}
EXPECT = {"trainer": "trainer/pure", "em": "uebench/pure", "at": "trainer/pure", "st": "ACM", "scheduler": "dry run",
          "scaling": "images", "store": "append store"}


def test_every_benchmark_is_covered():
    assert set(TINY) == set(BENCHMARKS)


@pytest.mark.parametrize("what", sorted(BENCHMARKS))
def test_benchmark_runs_and_prints_its_table(what, capsys):
    if what == "scaling" and not (CIFAR10 / "train.npz").exists():
        pytest.skip(FULL_COPY_REASON)
    assert main([what, *TINY[what]]) == 0
    assert EXPECT[what] in capsys.readouterr().out


DEVICE_BENCHMARKS = ["trainer", "em", "at", "st", "scaling"]


@pytest.mark.parametrize("what", DEVICE_BENCHMARKS)
def test_benchmark_rejects_an_unusable_device_before_any_work(what):
    with pytest.raises(SystemExit) as e:
        main([what, *TINY[what], "--device", "cuda:99"])
    assert str(e.value).startswith("error: --device: cuda:99 requested")
