"""One part of a bench script run in a fresh Python process, its result read back from the JSON lines it
prints: how every script here times each library (or setting) alone, so that no library warms the allocator,
the kernels or the caches for another, and none leaves hooks behind for the next."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence


def fresh(script: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[dict]:
    """Every JSON object line that `python script *argv` prints, run in a new interpreter (its stderr is shown
    when it fails)."""
    done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def sides(script: str, argv: Sequence[str], names: Sequence[str]) -> list[dict]:
    """The row of `script` run once per side, each in a fresh process: `argv` (the parent's, less `--alone`)
    plus `--side NAME`."""
    own = [a for a in argv if a != "--alone"]
    return [fresh_row(script, [*own, "--side", name]) for name in names]


def fresh_row(script: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> dict:
    """The last JSON object line of `fresh(script, argv)`: the result of a child that prints one."""
    return fresh(script, argv, env)[-1]


def median_cpu(call: Callable[[], object], repeats: int) -> float:
    """The median CPU time (`time.process_time`, this process) of `repeats` calls of `call` after one warm-up."""
    call()
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        runs.append(time.process_time() - start)
    return statistics.median(runs)
