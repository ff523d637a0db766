"""The ``uebench`` command. Imports torch/timm only inside the commands that need them.

Each module adds its commands to the one `main` group: `listing` (list), `run` (run, prune),
`results` (leaderboard, validate, verify, findings), `calibrate` (calibrate-st), `cache`
(cache ls/gc), `show` (show poison, export poison).
"""
from bench.cli import cache, calibrate, listing, results, run, show  # noqa: F401 - each registers its commands
from bench.cli.app import main

__all__ = ["main"]
