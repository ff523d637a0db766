"""``python -m bench.perf WHAT``: benchmarks that print ratios measured side by side in one run.

Each benchmark is a module of this package with ``add_arguments(parser)`` and ``run(args)``:
see `BENCHMARKS`. The numbers of one run on this project's machine, and their spread over
three, are in ``docs/PERFORMANCE.md``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {
    "trainer": "the trainer's images/s vs a pure training loop and a reference-style DataLoader",
    "em": "error-minimizing noise generation vs a pure loop and the EM code's style, per phase",
    "at": "PGD adversarial training vs a pure PGD-AT loop and madrys.py's style",
    "st": "progressive staged training: ACM's per-epoch cost (t-SNE or PCA) as a share of the epoch",
    "scheduler": "plan, dry-run and resume of a matrix of 10,000 finished cells",
    "scaling": "the trainer's images/s and EM's seconds per round at growing numbers of images",
    "store": "appending result rows: one write per row vs rewriting the file",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    for name, help_text in BENCHMARKS.items():
        importlib.import_module(f"bench.perf.{name}").add_arguments(sub.add_parser(name, help=help_text))
    a = p.parse_args(argv)
    return importlib.import_module(f"bench.perf.{a.what}").run(a)


if __name__ == "__main__":
    sys.exit(main())
