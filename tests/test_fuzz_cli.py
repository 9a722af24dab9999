"""A small seeded subset of `bench/fuzz_cli.py` (issue 27): random argv with hostile files over the commands that
need no training; no traceback, no hang, nothing written outside --out. The full pass (1,000 cases, every
command) is in bench/README.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import fuzz_cli  # noqa: E402

CHEAP = {"explain", "bench", "caption", "report", "interventions"}


def test_a_seeded_fuzz_subset_gives_no_traceback_hang_or_write_outside_out(tmp_path):
    outcomes = fuzz_cli.fuzz(8, seed=27, timeout=60, root=tmp_path / "fuzz", progress=False, only=CHEAP)
    bad = [(o.argv, o.problems, o.last) for o in outcomes if o.problems]
    assert not bad, bad
    assert {o.code for o in outcomes} <= {0, 2} and len(outcomes) == 8


def test_the_fuzz_reads_every_command_and_option_from_the_clis_help():
    commands = fuzz_cli.commands()
    from attnscope.cli import cli

    assert set(commands) == set(cli.commands)
    for name, command in cli.commands.items():
        want = {o for p in command.params if not getattr(p, "hidden", False)  # old spellings --help does not show
                for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
                if o.startswith("--") and o != "--help"}
        got = {n for o in commands[name] if not o.argument for n in (*o.names, *o.secondary)}
        assert got == want, name
    kinds = {o.names[0]: o.metavar for o in commands["train"]}
    assert kinds["--seed"] == "INTEGER" and kinds["--optimizer"].startswith("[") and kinds["--quiet"] == ""
    assert [o.names for o in commands["report"] if o.argument] == [("RUN_DIR",)]
