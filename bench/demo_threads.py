"""Wall time of `attnscope demo` with the thread count it picks itself and with fixed counts, on this machine
as it is loaded right now (the load average before and after each run is printed with it).

    PYTHONPATH=src nice -n 10 python bench/demo_threads.py [--settings auto,1,2] [--epochs 6]

Each setting runs the whole demo (the README's `make demo`) in a fresh temporary folder, one after the
other; "auto" leaves OMP_NUM_THREADS unset so that the demo chooses (`attnscope.cli.common.idle_cores`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(setting: str, epochs: int) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory(prefix="attnscope-demo-threads-") as tmp:
        argv = [sys.executable, "-m", "attnscope", "demo", "--out", str(Path(tmp) / "demo"), "--epochs", str(epochs)]
        if setting != "auto":
            argv += ["--threads", setting]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"demo failed with {setting}: {done.stderr[-2000:]}")
    chosen = re.search(r"using (\d+) of (\d+) CPU threads", done.stderr)
    threads = chosen.group(1) if chosen else (setting if setting != "auto" else str(len(os.sched_getaffinity(0))))
    accuracy = re.search(r"test accuracy (\d\.\d+)", done.stdout + done.stderr)
    return {"setting": setting, "threads": threads, "wall_s": round(wall, 1), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "test_acc": accuracy.group(1) if accuracy else "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="auto,1,2", help="comma-separated: auto or a thread count")
    parser.add_argument("--epochs", type=int, default=6, help="the demo's epochs (6 as in make demo)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; settings {args.settings}; epochs {args.epochs}")
    print("| setting | threads | wall (s) | load average before | after | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setting in args.settings.split(","):
        r = run(setting.strip(), args.epochs)
        print(f"| {r['setting']} | {r['threads']} | {r['wall_s']} | {r['load_before']} | {r['load_after']} | "
              f"{r['test_acc']} |", flush=True)


if __name__ == "__main__":
    main()
