"""The command line: `app` with its commands, registered (and listed by `--help`) in the order
their modules are imported."""

from flowrun.cli import authoring, operating, results
from flowrun.cli.base import app, run

__all__ = ["app", "authoring", "operating", "results", "run"]
