"""The speed ladder: every registered method against its best peer and its floor, each alone in a fresh process.

For each method (`ladder_peers.WORKLOADS`: the model, batch and options, the peers' calls and the passes the
method's definition requires), attnscope and every peer run in their own fresh Python process (`alone.py`),
in alternating rounds (A/B/A/B: attnscope, peer 1, peer 2, …, then again), each child timing one warm-up and
then `--repeats` calls in CPU seconds (`time.process_time`, one thread) with its own plain forward of the same
batch as the base. The row: attnscope's median, the best peer's median (the fastest of the peers), the ratio
peer / attnscope (> 1: attnscope is faster), the floor — the required forwards and forward + backward pairs
at the best per-image cost the machine reaches on this model (chunk and layout measured in a child of their own,
`units`) — attnscope's time over it, and attnscope's peak memory above the process's resident memory before
the first call (VmHWM − VmRSS, with the peak reset) against its budget (the shared pass of the batch + the
rerun budget of `explain.budget`). A method without a peer is measured against its floor alone.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ladder.py --rounds 2 --repeats 1            # every method
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ladder.py --methods "scorecam;lrp" --write   # some; into README

`--write` puts the table between the ladder markers of bench/README.md and docs/speed.md and the rows in
bench/results/ladder.json (merged with the rows already there, so parts can be run at different times).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from alone import fresh_row  # bench/ is on the path when the script runs
from ladder_peers import WORKLOADS, Workload
from torch import nn

import attnscope as ats

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ladder.json"
MARK = ("<!-- ladder:start -->", "<!-- ladder:end -->")
HEADER = ("CPU seconds per call (`time.process_time`), 1 thread, each side alone in a fresh process, the median of "
          "the alternating rounds (A/B/A/B) of one call after a warm-up; the load average (2 shared cores) and the "
          "command of each row are in bench/results/ladder.json. `peer / attnscope` > 1: attnscope is faster. "
          "`× its forward`: attnscope over the plain forward of the same batch in the same process.")


def build(name: str, batch: int, top: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The workload's model (random weights; resnet18 with random BatchNorm statistics, so every layer has a
    bias), `batch` images and the class each is explained for (its prediction; its `top` best classes (B, top))."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if name in ("resnet18", "resnet50"):
        model, size = ats.models.get(name).eval(), 224
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 1.5, generator=g)
    elif name == "vit":
        from torchvision.models import VisionTransformer

        model, size = VisionTransformer(224, 16, num_layers=4, num_heads=3, hidden_dim=192, mlp_dim=768).eval(), 224
    elif name == "ltpa":
        model, size = ats.models.get("ltpa").eval(), 64
    elif name == "sat":
        from attnscope.data import DigitScenes

        model, size = ats.models.get("sat", vocab=DigitScenes.vocabulary().to_json()).eval(), 96
    else:
        raise SystemExit(f"unknown ladder model {name!r}")
    x = torch.randn(batch, 3, size, size, generator=g)
    if name == "sat":  # a captioner: explained for the words it generates
        return model, x, torch.zeros(batch, dtype=torch.long)
    with torch.no_grad():
        out = model(x)
    if not (isinstance(out, torch.Tensor) and out.dim() == 2):
        return model, x, torch.zeros(batch).long()
    return model, x, out.topk(top, dim=1).indices if top else out.argmax(dim=1)


def _memory() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def child(method: str, side: str, repeats: int, batch: int | None) -> dict:
    """One side of one method in this (fresh) process: warm-up, then `repeats` calls and plain forwards."""
    import warnings

    warnings.filterwarnings("ignore")
    work = WORKLOADS[method]
    model, x, classes = build(work.model, batch or work.batch, work.top)  # as a user has it: parameters trainable
    names = work.methods or (method,)
    opts = {names[0]: work.options} if work.options else None
    targets = None if work.model == "sat" else classes
    call = (lambda: ats.explain(model, x, names, targets=targets, options=opts)) if side == "attnscope" \
        else work.peers[side](model, x, classes)

    def forward() -> None:
        with torch.no_grad():
            model.caption(x) if work.model == "sat" else model(x)

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set to the current one
    before, _ = _memory()
    call()  # warm-up: first passes of each shape, caches, the chunk probe
    times, bases = [], []
    for _ in range(repeats):
        t = time.process_time()
        forward()
        bases.append(time.process_time() - t)
        t = time.process_time()
        call()
        times.append(time.process_time() - t)
    peak = _memory()[1] - before
    return {"method": method, "side": side, "seconds": statistics.median(times), "forward": statistics.median(bases),
            "peak_mib": peak / 2**20, "batch": int(x.shape[0])}


def units(model_name: str) -> dict:
    """CPU seconds per image of a forward and of a forward + backward to the input on the workload model, each the
    best over chunks of 1–16 and both layouts (the floor's unit costs)."""
    from attnscope.modules import as_nhwc

    model, x, classes = build(model_name, 16)
    for p in model.parameters():
        p.requires_grad_(False)
    best = {"forward": float("inf"), "forward_backward": float("inf")}
    for layout in ("nchw", "nhwc"):
        xs = as_nhwc(x) if layout == "nhwc" else x
        for chunk in (1, 4, 8, 16):
            for kind in best:
                def run(t: torch.Tensor, kind: str = kind) -> None:
                    if kind == "forward":
                        with torch.no_grad():
                            model(t)
                        return
                    t = t.detach().requires_grad_()
                    out = model(t)
                    out = out if out.dim() == 2 else out.flatten(1)
                    torch.autograd.grad(out.gather(1, classes[: len(t), None]).sum(), t)

                run(xs[:chunk])
                t0 = time.process_time()
                for s in range(0, len(xs), chunk):
                    run(xs[s : s + chunk])
                best[kind] = min(best[kind], (time.process_time() - t0) / len(xs))
    return best


def budget_mib(work: Workload, batch: int) -> float:
    """The shared pass of the batch (estimated bytes one forward allocates, twice with a backward) plus the rerun
    budget of `explain.budget`: what a method's peak memory should stay within."""
    from attnscope.explain import budget

    model, x, _ = build(work.model, 1)
    net = model.encoder if work.model == "sat" else model  # a captioner's images go through its encoder alone
    cost = budget.input_cost(net, tuple(x.shape[1:]), x.dtype) or 0
    grad = work.forward_backwards > 0
    return (batch * cost * (2 if grad else 1) + budget.budget(torch.device("cpu"), grad)) / 2**20


def row(method: str, runs: list[dict], unit: dict) -> dict:
    """The ladder's row of one method from its children's results."""
    work = WORKLOADS[method]
    by_side: dict[str, list[dict]] = {}
    for r in runs:
        by_side.setdefault(r["side"], []).append(r)
    med = {s: statistics.median(r["seconds"] for r in rs) for s, rs in by_side.items()}
    ours = med.pop("attnscope")
    batch = by_side["attnscope"][0]["batch"]
    floor = batch * (work.forwards * unit["forward"] + work.forward_backwards * unit["forward_backward"])
    if floor != floor:  # no unit costs (the captioner): its own greedy caption of the batch is the floor
        floor = work.forwards * statistics.median(r["forward"] for r in by_side["attnscope"])
    peer = min(med, key=med.get) if med else None
    return {"method": method, "model": work.model, "batch": batch, "attnscope_s": ours, "peer": peer,
            "peer_s": med.get(peer), "peers_s": med, "ratio": med[peer] / ours if peer else None,
            "floor_s": floor, "over_floor": ours / floor, "peer_over_floor": med[peer] / floor if peer else None,
            "peak_mib": max(r["peak_mib"] for r in by_side["attnscope"]), "budget_mib": budget_mib(work, batch),
            "forward_s": statistics.median(r["forward"] for r in by_side["attnscope"]), "how": work.how,
            "note": work.note, "rounds": len(by_side["attnscope"])}


def table(rows: list[dict]) -> str:
    """The ladder as one markdown table."""
    lines = ["| method | model, batch | attnscope s | best peer | peer s | peer / attnscope | floor s | "
             "attnscope / floor | × its forward | peak MiB (budget) | load | floor: what the method must run |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        peer = "—" if r["peer"] is None else r["peer"]
        fmt = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['method']} | {r['model']}, {r['batch']} | {r['attnscope_s']:.3f} | {peer} | "
                     f"{fmt(r['peer_s'], 3)} | {fmt(r['ratio'])}× | {r['floor_s']:.3f} | {r['over_floor']:.2f}× | "
                     f"{r['attnscope_s'] / r['forward_s']:.2f} | {r['peak_mib']:.0f} ({r['budget_mib']:.0f}) | "
                     f"{r.get('load', '?')} | {r['how']}{note} |")
    return "\n".join(lines)


def write(rows: list[dict], header: str) -> None:
    """Merge `rows` into bench/results/ladder.json and put the whole table between the markers of the docs."""
    known = {r["method"]: r for r in json.loads(RESULTS.read_text())["rows"]} if RESULTS.exists() else {}
    known.update({r["method"]: r for r in rows})
    ordered = [known[m] for m in WORKLOADS if m in known]
    RESULTS.write_text(json.dumps({"header": header, "rows": ordered}, indent=1) + "\n")
    text = f"{MARK[0]}\n{header}\n\n{table(ordered)}\n{MARK[1]}"
    for doc in (HERE / "README.md", HERE.parent / "docs" / "speed.md"):
        old = doc.read_text() if doc.exists() else ""
        if MARK[0] in old:
            start, end = old.index(MARK[0]), old.index(MARK[1]) + len(MARK[1])
            doc.write_text(old[:start] + text + old[end:])
        else:
            doc.write_text(old + ("\n" if old else "") + text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=None, help="entries separated by ';'; default: every entry")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of fresh processes (A/B/A/B)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per child, after one warm-up")
    parser.add_argument("--batch", type=int, default=None, help="override every workload's batch")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", default="attnscope", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="into bench/results, bench/README.md, docs/speed.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child == "units":
        print(json.dumps(units(args.side)), flush=True)
        return
    if args.child is not None:
        print(json.dumps(child(args.child, args.side, args.repeats, args.batch)), flush=True)
        return
    chosen = args.methods.split(";") if args.methods else list(WORKLOADS)
    missing = [m for m in ats.list_methods() if m not in WORKLOADS]
    if missing and not args.methods:
        print(f"not in the ladder (no workload): {missing}", file=sys.stderr)
    unit = {name: fresh_row(__file__, ["--child", "units", "--side", name])
            for name in dict.fromkeys(WORKLOADS[m].model for m in chosen) if name != "sat"}
    unit["sat"] = {"forward": float("nan"), "forward_backward": float("nan")}  # a captioner: no class logits
    extra = ["--repeats", str(args.repeats)] + ([] if args.batch is None else ["--batch", str(args.batch)])
    rows = []
    for method in chosen:
        try:
            runs = [fresh_row(__file__, ["--child", method, "--side", side, *extra])
                    for _ in range(args.rounds) for side in ("attnscope", *WORKLOADS[method].peers)]
        except RuntimeError as e:  # one entry's failure is reported, the ladder goes on
            print(f"{method}: failed: {str(e)[-600:]}", file=sys.stderr, flush=True)
            continue
        rows.append(row(method, runs, unit[WORKLOADS[method].model]))
        rows[-1]["load"] = open("/proc/loadavg").read().split()[0]
        rows[-1]["command"] = f"OMP_NUM_THREADS=1 PYTHONPATH=src python bench/ladder.py --methods \"{method}\" " \
                              f"--rounds {args.rounds} --repeats {args.repeats}"
        print(json.dumps(rows[-1]), flush=True)
        if args.write:  # after every entry: a long ladder stopped midway keeps what it measured
            write(rows[-1:], HEADER)
    print("\n" + HEADER + "\n\n" + table(rows))


if __name__ == "__main__":
    main()
