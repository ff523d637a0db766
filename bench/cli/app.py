"""The ``uebench`` click group and the one rule for errors: a user's mistake (a bad config, an
unknown plugin, a missing dataset, a malformed results file) is one line on stderr and exit
code 2, never a traceback; a bug in uebench still shows its traceback."""
from __future__ import annotations

import logging
import sys

import click

USER_ERRORS = frozenset({
    "RegistryError", "ConfigError", "PreflightError", "DatasetError", "ExecutorError", "ResultsFileError",
    "OverrideError", "DeviceError", "PoisonError", "SubmissionError", "ExternalPoisonError",
})
"""Names of the exceptions that mean "the input is wrong" (their messages are one line)."""


def fail(msg: str, code: int = 2) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


class App(click.Group):
    """A click group that turns user errors into one line and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if type(exc).__name__ in USER_ERRORS and type(exc).__module__.split(".")[0] in ("bench", "registry", "attacks", "defenses"):
                fail(str(exc).replace("\n", " "))
            raise


@click.group(cls=App)
@click.version_option(package_name="uebench")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """uebench: benchmark unlearnable examples (attacks × defenses × archs × datasets)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def progress_bar(desc: str, total: int | None):
    """A tqdm bar on stderr (quiet when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=desc == "cells", disable=None, dynamic_ncols=True, file=sys.stderr)
