"""Does importing attnscope slow a plain 1-thread forward? resnet50, batch 8, 224 px, in fresh processes taking turns:
no import, OMP_WAIT_POLICY=PASSIVE set by hand, `import attnscope` first (which sets PASSIVE when unset), and
`import attnscope` with ACTIVE set before it. The median of 5 forwards per process (CPU seconds, after a warm-up).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/forward_import.py --rounds 3

Issue 31's lead (its note): in the ladder's resnet50 rows our process's own forward was slower than the floor
process's; on a loaded machine this A/B was noise (0.78-0.91 s). Run it on an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIDES = ("plain", "passive", "attnscope", "attnscope, active")


def child(side: str) -> None:
    if side == "passive":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    elif side.startswith("attnscope"):
        if side.endswith("active"):
            os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
        import attnscope  # noqa: F401
    import torch
    import torchvision

    torch.set_num_threads(1)
    model, x = torchvision.models.resnet50().eval(), torch.rand(8, 3, 224, 224)
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(5):
            started = time.process_time()
            model(x)
            times.append(time.process_time() - started)
    print(json.dumps({"side": side, "forward_s": statistics.median(times)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    rows = []
    for r in range(args.rounds):
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            done = subprocess.run([sys.executable, __file__, "--child", side], env=env, capture_output=True, text=True,
                                  check=True)
            rows.append({**json.loads(done.stdout.splitlines()[-1]), "load": round(os.getloadavg()[0], 2)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({side: statistics.median(r["forward_s"] for r in rows if r["side"] == side) for side in SIDES}))


if __name__ == "__main__":
    main()
