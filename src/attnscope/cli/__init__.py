"""The `attnscope` command line: one module per command, each adding itself to `cli`.

Errors caused by the user's input (`AttnscopeError`) print one readable line and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from attnscope import __version__
from attnscope.errors import AttnscopeError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="attnscope")
def cli() -> None:
    """attnscope: what image models attend to, whether to trust it, and how it forms in training."""


# Each command module registers itself on `cli` when imported; one line per command.
for _command in ("train", "demo", "explain", "sanity", "bench", "interventions", "report", "caption"):
    importlib.import_module(f"attnscope.cli.{_command}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `attnscope` script."""
    try:
        cli.main(args=argv, prog_name="attnscope", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except AttnscopeError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
