"""The `attnscope` command line: one module per command, each adding itself to `cli`.

Errors caused by the user's input (`AttnscopeError`) print one readable line and exit with status 2;
so do a full disk, a read-only or forbidden folder, and running out of memory. Command modules import
torch only inside their commands, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import errno
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
    except click.UsageError as e:  # one line instead of click's usage block
        where = e.ctx.command_path if e.ctx is not None else "attnscope"
        _fail(f"{e.format_message().rstrip('.')} (see `{where} --help`)")
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except AttnscopeError as e:
        _fail(str(e))
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRORS:
            raise
        where = f": {e.filename}" if e.filename else ""
        _fail(f"{e.strerror or e}{where}; nothing was left half-written")
    except MemoryError:
        _fail("out of memory: lower --batch-size, the number or the size of the images")
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


# OSErrors that say something about the machine, not about attnscope: one line, not a traceback.
ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE,
                      errno.EFBIG, errno.ENAMETOOLONG}


def _fail(message: str) -> None:
    """Print `message` as one line (a message that spans lines is joined) and exit with status 2."""
    click.echo("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()), err=True)
    sys.exit(2)
