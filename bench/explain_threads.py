"""Threads on a loaded machine: Grad-CAM + IG of 5 photos with EfficientNet-Lite0, each setting in a fresh
process, the settings taking turns (so each sees the same load on average), the load average recorded.

    python bench/explain_threads.py --repeats 3              # the library call, threads × OpenMP wait policy
    python bench/explain_threads.py --cli --repeats 3        # `attnscope explain` as a user runs it: default
                                                              # settings vs OMP_NUM_THREADS=1 (issue 30)
    python bench/explain_threads.py --cli --repeats 3 --load 6   # the same beside 6 busy processes of its own

Library sides: `1 thread`; `2 threads, spinning` (libgomp's own default: torch imported before attnscope, so
attnscope's OMP_WAIT_POLICY=PASSIVE is not applied); `2 threads, passive`. Writes
bench/results/explain_threads[_cli].json with every run (wall and CPU seconds, the 1-minute load average).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIDES = {"1 thread": ("1", None), "2 threads, spinning": ("2", "spin"), "2 threads, passive": ("2", "passive")}


def child(threads: str, wait: str | None, steps: int) -> None:
    """One timed explain call in this process (the side said by the arguments); prints one JSON line."""
    if wait == "spin":
        import torch  # (before attnscope: then it leaves libgomp's spinning default alone)

        import attnscope as ats
    else:
        ats = importlib.import_module("attnscope")  # before torch: it sets OMP_WAIT_POLICY=PASSIVE
        import torch

    torch.set_num_threads(int(threads))
    model = ats.models.get("efficientnet_lite0").eval()
    photos = ats.data.get("photos", "test", 100)
    x = torch.stack([photos[i].image for i in range(5)])  # (5, 3, 224, 224)
    wall, cpu = time.perf_counter(), time.process_time()
    ats.explain(model, x, ("gradcam", "ig"), options={"ig": {"steps": steps}})
    print(json.dumps({"explain_s": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


def run_library(name: str, steps: int) -> dict:
    threads, wait = SIDES[name]
    load = os.getloadavg()[0]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run([sys.executable, __file__, "--child", threads, wait or "-", str(steps)], env=env,
                          capture_output=True, text=True, check=True)
    return {"side": name, "load_before": round(load, 2), **json.loads(done.stdout.splitlines()[-1])}


def run_cli(name: str, out: Path) -> dict:
    """`attnscope explain` of 5 photos with gradcam,ig, default settings or OMP_NUM_THREADS=1, timed from outside."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT / "src")
    if name == "OMP_NUM_THREADS=1":
        env["OMP_NUM_THREADS"] = "1"
    load = os.getloadavg()[0]
    argv = [sys.executable, "-m", "attnscope", "explain", "--model", "efficientnet_lite0", "--images", "photos",
            "--n", "5", "--methods", "gradcam,ig", "--out", str(out), "--quiet"]
    before = os.times()
    wall = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - wall
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    said = [line for line in done.stderr.splitlines() if "thread" in line]
    return {"side": name, "load_before": round(load, 2), "wall_s": round(seconds, 1),
            "cpu_s": round(after.children_user + after.children_system - before.children_user
                           - before.children_system, 1), "said": said[:1]}


def busy(n: int) -> list[subprocess.Popen]:
    """`n` processes that keep one core busy each (a controlled load: the 1-minute load average rises by about
    `n` within a minute); the caller stops them."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32, help="IG steps of the library sides (the default is 32)")
    parser.add_argument("--cli", action="store_true")
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--load", type=int, default=0, help="busy processes run beside the timed ones (the load "
                                                             "they add is recorded before each run)")
    args = parser.parse_args()
    if args.child:
        threads, wait, steps = args.child
        return child(threads, None if wait == "-" else wait, int(steps))
    names = ["default settings", "OMP_NUM_THREADS=1"] if args.cli else list(SIDES)
    load = busy(args.load)
    try:
        if load:
            time.sleep(75)  # the 1-minute load average climbs to the added load first
        rows = timed(args, names)
    finally:
        for proc in load:
            proc.kill()
    key = "wall_s" if args.cli else "explain_s"
    summary = {n: sorted(row[key] for row in rows if row["side"] == n) for n in names}
    result = {"command": " ".join(["python", "bench/explain_threads.py", *sys.argv[1:]]), "cores": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "busy_processes": args.load, "runs": rows,
              "sorted_seconds": summary}
    name = f"explain_threads{'_cli' if args.cli else ''}{f'_load{args.load}' if args.load else ''}.json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary))


def timed(args: argparse.Namespace, names: list[str]) -> list[dict]:
    """The runs, the sides taking turns (A B, B A, ...), each in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for k, name in enumerate(names if r % 2 == 0 else names[::-1]):
                row = run_cli(name, Path(tmp) / f"out{r}_{k}") if args.cli else run_library(name, args.steps)
                rows.append({**row, "repeat": r})
                print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
