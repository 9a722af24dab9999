"""Fuzz the command line: random argv over every command and option, with hostile files; does anything give a
traceback, hang, or write outside `--out`?

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python bench/fuzz_cli.py --cases 1000 --seed 0 [--json OUT]

The commands and their options are read from `attnscope --help` and `attnscope COMMAND --help` (the CLI's own
door, as a user sees it), so a new command or option is fuzzed the moment it exists. Each case starts from a
cheap argv of its command (tiny data: `--n 2`, a 2-block SmallCNN run made once), then sets 1-4 options (any of
the command's, required or not) to values drawn by the option's type and name: small valid numbers, numbers out
of range or malformed, missing, corrupt, linked, FIFO and device paths, markers that list paths outside, JSON
with absolute and `..` names, `key=value` settings with hostile values, unknown method names, long names,
newlines. Numbers that are valid but ask for long work (`--n 100000`) are never drawn: such a run is no fault.

Every case runs in its own folder under one temporary root, as `python -m attnscope ARGV` in a child forked from
this process (which has imported torch and attnscope's library once, so a case costs no interpreter start) or,
with `--subprocess`, in a fresh interpreter. A case is bad when it prints a traceback, when a refusal (exit 2)
takes more than one line, when it exits with another status than 0 or 2, when it runs past `--timeout` seconds,
or when anything changed in the root outside the case's `--out` (a tree of names, types, sizes, modes, link
targets and modification times, taken before and after; the run folder a `report` writes into counts as its
out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz_draw import TINY, Case, child_env, commands, make_case

__all__ = ["Case", "commands", "fuzz", "make_case", "summary"]


@dataclass
class Outcome:
    number: int
    command: str
    argv: list[str]
    code: int | None
    seconds: float
    problems: list[str]
    last: str


# -- hostile files, made once ----------------------------------------------------------------------------------


def build_fixtures(root: Path) -> None:
    """A tiny run, a captioner, and hostile files (in a child process, so this one never starts torch threads)."""
    env = child_env()
    code = f"""
import json, runpy, sys
from pathlib import Path
root = Path({str(root)!r})
sys.argv = ["attnscope", "train", "--out", str(root / "run"), *{TINY!r}]
try:
    runpy.run_module("attnscope", run_name="__main__", alter_sys=True)  # python -m attnscope train ...
except SystemExit as e:
    assert not e.code, e.code
from attnscope import data, models
from attnscope.models import checkpoint
from safetensors.torch import save_file
vocab = data.get("scenes", "train", 16).vocabulary()
checkpoint.save(models.get("sat", vocab=vocab.to_json(), encoder_widths=[8, 16], hidden_dim=32, max_len=6),
                root / "sat.safetensors")
weights = dict(models.get("smallcnn", widths=[4, 8]).state_dict())
for name, header in {{"crafted": {{"format": checkpoint.FORMAT, "model": {{"name": "smallcnn",
                                                                     "config": {{"widths": [4, 10**9]}}}}}},
                     "config_list": {{"format": checkpoint.FORMAT, "model": {{"name": "smallcnn", "config": [4]}}}},
                     "no_header": None}}.items():
    save_file(weights, str(root / f"{{name}}.safetensors"),
              metadata=None if header is None else {{"attnscope": json.dumps(header)}})
from PIL import Image
import numpy as np
imgs = root / "imgs"
imgs.mkdir()
for i in range(2):
    Image.new("RGB", (40, 32), (30 * i, 90, 200)).save(imgs / f"ok{{i}}.png")
Image.new("RGB", (1, 1)).save(root / "one.png")
Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I").save(root / "wide.tif")
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)
    hostile = root / "hostile"
    hostile.mkdir()
    (hostile / "truncated.png").write_bytes((root / "imgs" / "ok0.png").read_bytes()[:40])
    (hostile / "text.png").write_text("not an image")
    (hostile / "empty.png").write_bytes(b"")
    os.mkfifo(hostile / "fifo.png")
    (hostile / "zero.png").symlink_to("/dev/zero")
    (hostile / "dangling.png").symlink_to(root / "nowhere.png")
    (hostile / "loop").symlink_to(hostile / "loop")
    shutil.copy(root / "imgs" / "ok0.png", hostile / "ok.png")
    mixed = root / "mixed"
    mixed.mkdir()
    shutil.copy(root / "imgs" / "ok0.png", mixed / "a.png")
    os.mkfifo(mixed / "b.png")
    (root / "garbage.safetensors").write_bytes(b"\x00" * 64)
    (root / "plain.txt").write_text("hello")
    os.mkfifo(root / "fifo")
    caps = {"images": [{"filename": name, "split": "train", "sentences": [{"tokens": ["a", "red", "digit"]}]}
                       for name in ("ok0.png", "../plain.txt", str(root / "plain.txt"), "a\0b.png")]}
    (root / "caps.json").write_text(json.dumps(caps))
    (root / "notjson.json").write_text("{not json")


# -- drawing argv --------------------------------------------------------------------------------------------------


# -- running -----------------------------------------------------------------------------------------------------


def prepare(case: Case, folder: Path, fx: Path) -> tuple[list[str], Path | None, set[Path]]:
    """The case's folder and argv with its placeholders filled; its effective --out and the paths it may write."""
    folder.mkdir(parents=True)
    run = folder / "run"
    shutil.copytree(fx / "run", run, symlinks=True)
    (folder / "mine").mkdir()
    (folder / "mine" / "thesis.tex").write_text("precious")
    (folder / "file.txt").write_text("x")
    (folder / "real").mkdir()
    (folder / "link").symlink_to(folder / "real")
    (folder / "planted").mkdir()
    (folder / "victim").mkdir()
    (folder / "victim" / "a.txt").write_text("precious")
    (folder / "planted" / ".attnscope-output.json").write_text(json.dumps({
        "format": "attnscope-output/1", "command": case.command, "files": ["../victim/", str(folder / "victim")],
        "resumable": True, "partial": True}))
    argv = [a.replace("FX/", f"{fx}/").replace("FX", str(fx)) for a in case.argv]
    argv = [str(run) if a == "RUN" else a for a in argv]
    argv = [str(folder / "o") if a == "OUT" else a for a in argv]
    out = _out_of(case.command, argv, folder)
    allowed = {out} if out is not None else set()
    if case.command == "report":  # writes report.html into the run (or --out) and lists it in the run's marker
        for i, a in enumerate(argv[1:], 1):
            if not a.startswith("-") and argv[i - 1] not in ("--out", "--images", "--max-frames", "--with"):
                allowed |= {Path(a) / "report.html", Path(a) / ".attnscope-output.json"}
                break
    return argv, out, allowed


def _out_of(command: str, argv: list[str], folder: Path) -> Path | None:
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"]
    if values:
        return (folder / values[-1]) if not os.path.isabs(values[-1]) else Path(values[-1])
    default = {"train": "runs/train", "demo": "runs/demo"}.get(command)
    return folder / default if default else None


def snapshot(roots: list[Path], skip: set[Path]) -> dict[str, tuple]:
    """(type, size, mode, mtime, link target) of every path under `roots`, links not followed, `skip` left out."""
    seen: dict[str, tuple] = {}
    skipped = {str(p) for p in skip}
    for root in roots:
        for base, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(base, d) not in skipped]
            for name in dirs + files:
                p = os.path.join(base, name)
                if p in skipped:
                    continue
                st = os.lstat(p)
                link = os.readlink(p) if os.path.islink(p) else ""
                seen[p] = (st.st_mode, st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns, link)
    return seen


def outside_writes(before: dict[str, tuple], after: dict[str, tuple], allowed: set[Path]) -> list[str]:
    """What changed outside the `allowed` paths (the case's out): new, changed or removed paths; the folders above
    an allowed path (made or touched by writing it) and its lock file beside it may change."""
    above = {str(q) for p in allowed for q in p.parents}
    locks = {str(p.parent / f".{p.name}.lock") for p in allowed}
    changed = [p for p in after if p not in before and p not in above and p not in locks]
    changed += [p for p in before if p in after and after[p] != before[p] and p not in above]
    changed += [f"removed {p}" for p in before if p not in after]
    return sorted(changed)


def run_forked(argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, float]:
    """`attnscope ARGV` in a forked child: (exit status or None on timeout, its stderr, seconds)."""
    err_path = cwd / ".fuzz-stderr"
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: run the command, never return into the parent's code
        code = 70
        try:
            os.setsid()
            os.chdir(cwd)
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            sys.stderr = open(2, "w", buffering=1, errors="replace", closefd=False)  # not a caller's capture (pytest)
            sys.stdout = open(1, "w", closefd=False)
            import runpy

            sys.argv = ["attnscope", *argv]
            try:
                runpy.run_module("attnscope", run_name="__main__", alter_sys=True)  # `python -m attnscope ARGV`
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - what a user would see: the traceback, exit 1
                import traceback

                traceback.print_exc()
                code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - start > timeout:
            _kill(pid)
            code = None
            break
        time.sleep(0.02)
    seconds = time.monotonic() - start
    err = err_path.read_text(errors="replace") if err_path.exists() else ""
    err_path.unlink(missing_ok=True)
    return code, err, seconds


def run_subprocess(argv: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, float]:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "attnscope", *argv], cwd=cwd, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err, time.monotonic() - start
    except subprocess.TimeoutExpired:
        _kill(proc.pid)
        _, err = proc.communicate()
        return None, err, time.monotonic() - start


def _kill(pid: int) -> None:
    """Kill the case's process group (the child made itself its leader) and reap the child."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def judge(case: Case, code: int | None, err: str, seconds: float, writes: list[str]) -> Outcome:
    problems = []
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code is None:
        problems.append("hang")
    if "Traceback (most recent call last)" in err:
        problems.append("traceback")
    elif code == 2 and len([ln for ln in lines if not ln.startswith(("note:", "warning:"))]) != 1:
        problems.append(f"{len(lines)} lines")
    elif code not in (0, 2, None):
        problems.append(f"exit {code}")
    if writes:
        problems.append("outside writes: " + ", ".join(writes[:3]))
    last = next((ln for ln in reversed(lines) if "Error" in ln or ln.startswith("error")), lines[-1] if lines else "")
    return Outcome(case.number, case.command, case.argv, code, round(seconds, 2), problems, last[:300])


def run_case(case: Case, root: Path, fx: Path, timeout: float, forked: bool = True) -> Outcome:
    folder = root / f"case{case.number:05d}"
    argv, out, allowed = prepare(case, folder, fx)
    before = snapshot([folder, fx], allowed)
    code, err, seconds = (run_forked if forked else run_subprocess)(argv, folder, timeout)
    after = snapshot([folder, fx], allowed)
    outcome = judge(case, code, err, seconds, outside_writes(before, after, allowed))
    if not outcome.problems:
        shutil.rmtree(folder, ignore_errors=True)
    return outcome


def fuzz(cases: int, seed: int, timeout: float, forked: bool = True, root: Path | None = None,
         progress: bool = True, only: set[str] | None = None) -> list[Outcome]:
    """Run `cases` drawn cases (seeded; of the commands in `only`, else all); returns their outcomes. The root is
    removed unless a case went bad."""
    import torch  # noqa: F401

    import attnscope  # noqa: F401 - the library and torch, imported once here: a forked case starts with them

    root = root or Path(tempfile.mkdtemp(prefix="attnscope-fuzz-"))
    fx = root / "fx"
    fx.mkdir(parents=True)
    build_fixtures(fx)
    cmds = {k: v for k, v in commands().items() if only is None or k in only}
    rng = random.Random(seed)
    outcomes = []
    for number in range(cases):
        case = make_case(number, rng, cmds, fx)
        outcome = run_case(case, root / "cases", fx, timeout, forked)
        outcomes.append(outcome)
        if progress:
            flag = "BAD " + "; ".join(outcome.problems) if outcome.problems else "ok"
            print(f"{number:5d} {outcome.seconds:6.1f}s exit {outcome.code} {flag}: {' '.join(case.argv)[:160]}"
                  + (f"\n      {outcome.last}" if outcome.problems else ""), flush=True)
    if not any(o.problems for o in outcomes):
        shutil.rmtree(root, ignore_errors=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    kinds = Counter(p.split(":")[0] for o in outcomes for p in o.problems)
    return {"cases": len(outcomes), "bad": sum(bool(o.problems) for o in outcomes),
            "tracebacks": kinds.get("traceback", 0), "hangs": kinds.get("hang", 0),
            "outside_writes": kinds.get("outside writes", 0),
            "other": sum(v for k, v in kinds.items() if k not in ("traceback", "hang", "outside writes")),
            "exit_codes": dict(Counter(str(o.code) for o in outcomes)),
            "per_command": dict(Counter(o.command for o in outcomes)),
            "seconds": round(sum(o.seconds for o in outcomes), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120, help="seconds a case may run before it is a hang")
    parser.add_argument("--subprocess", action="store_true", help="run each case as `python -m attnscope`")
    parser.add_argument("--json", default=None, help="write every outcome and the summary here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    start = time.time()
    outcomes = fuzz(args.cases, args.seed, args.timeout, forked=not args.subprocess)
    result = summary(outcomes)
    result["wall_seconds"] = round(time.time() - start, 1)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result, "command": " ".join(sys.argv),
                                               "outcomes": [o.__dict__ for o in outcomes]}, indent=1))


if __name__ == "__main__":
    main()
