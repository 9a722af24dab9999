"""Images per second over a streamed data set: (a) a plain forward, (b) five gradient CAMs, (c) IG with
32 steps, (d) the full default leaderboard — attnscope against pytorch-grad-cam and captum looping over the
same DataLoader (the peers have no leaderboard).

resnet18 (torchvision, random weights, seed 0), 224 px images made per index by a Dataset (no disk),
batches of 16 from a DataLoader. Every (part, library) runs alone in a fresh process (`--child`), so no
library warms the allocator or the kernels for another; each child times its whole loop after one
warm-up batch with `time.process_time` (CPU time of the process: this machine is shared by several
jobs, wall time would measure them). Throughput = images / CPU seconds.

- forward:   `model(x)` under no_grad — the ceiling for anything that needs a forward.
- backward:  one forward + backward to the input — IG's floor is 32 × this.
- cams:      attnscope `explain(model, x, [gradcam, gradcam++, xgradcam, hirescam, layercam])` (one shared
             pass) vs pytorch-grad-cam's five classes, each with its own pass (their only way).
- ig:        attnscope `explain(model, x, "ig", steps=32)` (chunk from the memory budget) vs captum's
             `IntegratedGradients.attribute(n_steps=32)` at its default (all steps in one batch).
- scorecam:  at `layer4` (512 channels: 512 masked forwards per image) attnscope vs pytorch-grad-cam's
             ScoreCAM at its default (batch_size 32); its floor is 512 × the forward's time per image.
- leaderboard: what `attnscope bench --stream` runs with no --methods/--metrics (every applicable method,
             `--metrics default`, the default settings), through the same call (`stream.bench_dataset`) and so
             the same streamed DataLoader (shards of `--batch` images), into a temporary folder; timed whole,
             including the one image it scores first as a check. No peer has a leaderboard: no peer row.
             Before it, the time `evaluate.estimate` (what `attnscope bench --estimate` prints) expects for
             512 images is printed (`--no-estimate` skips it: it times every method on one image and every
             column on one map, about half the leaderboard of one image: 1,133 CPU s on resnet18 at 224 px);
             `--parts leaderboard-estimate` prints the estimate alone (with the CPU time of its probe).
             `--parts leaderboard-methods` times instead each of its methods' `explain` on one image (a lower
             bound of its cost per image; the columns come on top).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/dataset_throughput.py --n 512 --n-ig 64
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/dataset_throughput.py --parts forward,leaderboard --n-leaderboard 2

- leaderboard-fast: the leaderboard of `attnscope bench --preset fast` (`evaluate.presets`) on `--n-leaderboard`
             images with a centred box each (so every group runs), in CPU seconds per image.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/dataset_throughput.py --parts leaderboard-fast --n-leaderboard 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from alone import fresh_row
from torch.utils.data import DataLoader, Dataset

CAMS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")


class Synthetic(Dataset):
    """`n` images (3, 224, 224) in [0, 1], image i drawn from seed i."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(i))


class Unlabelled(Synthetic):
    """The same images as (image, −1) items: no label, so the leaderboard scores the class the model predicts
    (as for a folder of images)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return super().__getitem__(i), -1


def _model() -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def _forward(model):
    def step(x):
        with torch.no_grad():
            model(x)
    return step


def _backward(model):
    def step(x):
        x = x.clone().requires_grad_(True)
        torch.autograd.grad(model(x).max(dim=1).values.sum(), x)
    return step


def _ours_cams(model):
    import attnscope as ats

    return lambda x: ats.explain(model, x, list(CAMS), layer="layer4")


def _gradcam_cams(model):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM

    def step(x):
        for kind in (GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM):
            with kind(model=model, target_layers=[model.layer4]) as cam:
                cam(input_tensor=x, targets=None)
    return step


def _ours_ig(model):
    import attnscope as ats

    return lambda x: ats.explain(model, x, "ig", options={"ig": {"steps": 32}})


def _captum_ig(model):
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)

    def step(x):
        with torch.no_grad():
            target = model(x).argmax(dim=1)
        ig.attribute(x, target=target, n_steps=32)
    return step


def _ours_scorecam(model):
    import attnscope as ats

    return lambda x: ats.explain(model, x, "scorecam", layer="layer4")


def _gradcam_scorecam(model):
    from pytorch_grad_cam import ScoreCAM

    def step(x):
        with ScoreCAM(model=model, target_layers=[model.layer4]) as cam:
            cam(input_tensor=x, targets=None)
    return step


RUNS = {("forward", "torch"): _forward, ("backward", "torch"): _backward, ("cams", "attnscope"): _ours_cams,
        ("cams", "pytorch-grad-cam"): _gradcam_cams, ("ig", "attnscope"): _ours_ig, ("ig", "captum"): _captum_ig,
        ("scorecam", "attnscope"): _ours_scorecam, ("scorecam", "pytorch-grad-cam"): _gradcam_scorecam}


def default_leaderboard(model: torch.nn.Module, dataset: Dataset, out: Path, shard_size: int,
                        workers: int = 0) -> dict[str, Any]:
    """The leaderboard `attnscope bench --stream` computes with no --methods/--metrics, of `dataset` into `out`:
    every applicable method (methods=None), the default columns, the default Settings (the CLI's defaults)."""
    from attnscope.evaluate.columns import select
    from attnscope.stream import Streaming
    from attnscope.stream.bench import bench_dataset

    return bench_dataset(model, dataset, out, metrics=select("default"), streaming=Streaming(shard_size, workers))


def leaderboard_estimate(model: torch.nn.Module, n: int) -> dict[str, Any]:
    """`evaluate.estimate` of the default leaderboard of `n` images of `Unlabelled` (what `attnscope bench
    --estimate` prints): every method and column timed on image 0, scaled to n."""
    from attnscope.evaluate import estimate
    from attnscope.evaluate.columns import select

    two = torch.stack([Synthetic(2)[i] for i in range(2)])
    with torch.no_grad():
        labels = model(two).argmax(1)
    index = torch.arange(n) % 2  # n images, copies of the two it times (only images[:2] are run)
    started = time.process_time()
    guess = estimate(model, two[index], labels[index], metrics=select("default"))
    return {"part": "leaderboard-estimate", "images": n, "estimated_s": round(guess.total, 1),
            "estimated_s_per_image": round(guess.total / n, 1), "explain_s": round(guess.explain, 1),
            "groups_s": {g: round(s, 1) for g, s in guess.groups.items()},
            "probe_cpu_s": round(time.process_time() - started, 1)}


def methods_child() -> dict[str, Any]:
    """CPU seconds of `explain` of each method the default leaderboard runs on resnet18, on one 224 px image,
    one after the other (the first call of each includes its own warm-up): a lower bound of the leaderboard's
    cost per image (its columns come on top), printed as each finishes."""
    import attnscope as ats
    from attnscope.evaluate.leaderboard import applicable_methods

    model, x = _model(), Synthetic(1)[0][None]
    seconds = {}
    for name in applicable_methods(model):
        t0 = time.process_time()
        ats.explain(model, x, name)
        seconds[name] = round(time.process_time() - t0, 2)
        print(f"{name}: {seconds[name]} s", file=sys.stderr, flush=True)
    return {"part": "leaderboard-methods", "images": 1, "cpu_s": seconds, "sum_cpu_s": round(sum(seconds.values()), 1)}


def fast_child(n: int) -> dict[str, Any]:
    """The `--preset fast` leaderboard of `n` images (labels: the predicted classes; a centred box of half the
    image as ground truth, so the localisation group runs), timed in CPU seconds, whole (its estimate apart)."""
    from attnscope.evaluate import Settings, leaderboard
    from attnscope.evaluate.presets import preset

    model = _model()
    x = torch.stack([Synthetic(n)[i] for i in range(n)])
    with torch.no_grad():
        labels = model(x).argmax(1)
    h, w = x.shape[-2:]
    boxes = torch.tensor([[w // 4, h // 4, 3 * w // 4, 3 * h // 4]] * n)
    fast = preset("fast")
    settings = Settings(step=fast.step(h, w), perturbations=fast.perturbations)
    t0 = time.process_time()
    board = leaderboard(model, x, labels, boxes, methods=list(fast.methods), metrics=fast.metrics.split(","),
                        settings=settings)
    seconds = time.process_time() - t0
    from attnscope.evaluate import COLUMNS

    return {"part": "leaderboard-fast", "images": n, "cpu_s": round(seconds, 2), "cpu_s_per_image": round(
        seconds / n, 2), "maps": len(board.rows), "columns": board.columns,
        "groups": sorted({COLUMNS.get(c).group for c in board.columns}), "skipped": board.skipped}


def leaderboard_child(n: int, workers: int, batch: int) -> dict[str, Any]:
    """The default leaderboard of `n` images, timed in CPU seconds (this process's), whole."""
    model = _model()
    with tempfile.TemporaryDirectory(prefix="attnscope-bench-") as tmp:
        t0 = time.process_time()
        result = default_leaderboard(model, Unlabelled(n), Path(tmp) / "out", batch, workers)
        seconds = time.process_time() - t0
    head = result["meta"]
    return {"part": "leaderboard", "library": "attnscope", "images": n, "cpu_s": round(seconds, 2),
            "images_per_s": round(n / seconds, 5), "maps": len(result["rows"]), "columns": head["columns"],
            "skipped": head["skipped"], "explain_wall_s": head["seconds"]}


def child(part: str, library: str, n: int, workers: int, batch: int = 16) -> dict:
    model = _model()
    step = RUNS[(part, library)](model)
    loader = DataLoader(Synthetic(n), batch_size=batch, num_workers=workers)
    batches = iter(loader)
    step(next(batches))  # warm-up batch, not timed
    t0, images = time.process_time(), 0
    for x in batches:
        step(x)
        images += len(x)
    seconds = time.process_time() - t0
    return {"part": part, "library": library, "images": images, "cpu_s": round(seconds, 2),
            "images_per_s": round(images / seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images for forward, backward and cams (+1 warm-up batch)")
    parser.add_argument("--n-ig", type=int, default=64, help="images for IG (+1 warm-up batch)")
    parser.add_argument("--n-scorecam", type=int, default=2, help="images for Score-CAM (+1 warm-up batch)")
    parser.add_argument("--n-leaderboard", type=int, default=2, help="images for the default leaderboard")
    parser.add_argument("--no-estimate", action="store_true", help="leave out the leaderboard's time estimate")
    parser.add_argument("--batch", type=int, default=16, help="images per DataLoader batch")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--parts", default="forward,backward,cams,ig,scorecam,leaderboard")
    parser.add_argument("--child", nargs=2, metavar=("PART", "LIBRARY"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(_child(args)))
        return
    parts = args.parts.split(",")
    if ("leaderboard" in parts and not args.no_estimate) or "leaderboard-estimate" in parts:
        print(json.dumps(_fresh(args, "leaderboard-estimate", "attnscope")), flush=True)
    rows = {}
    for part, library in [*RUNS, ("leaderboard-methods", "attnscope"), ("leaderboard", "attnscope"),
                          ("leaderboard-fast", "attnscope")]:
        if part in parts:
            rows[(part, library)] = _fresh(args, part, library)
            print(json.dumps(rows[(part, library)]), flush=True)
    rate = lambda p, lib: rows[(p, lib)]["images_per_s"] if (p, lib) in rows else None
    if rate("forward", "torch") and rate("cams", "attnscope"):
        print(f"five CAMs / plain forward throughput: {rate('cams', 'attnscope') / rate('forward', 'torch'):.2f}")
    if rate("cams", "attnscope") and rate("cams", "pytorch-grad-cam"):
        ratio = rate("cams", "attnscope") / rate("cams", "pytorch-grad-cam")
        print(f"five CAMs, attnscope / pytorch-grad-cam: {ratio:.2f}×")
    if rate("ig", "attnscope") and rate("backward", "torch"):
        floor = rate("backward", "torch") / 32
        print(f"IG 32 steps: {floor / rate('ig', 'attnscope'):.2f}× its floor (32 forward + backward)")
    if rate("ig", "attnscope") and rate("ig", "captum"):
        print(f"IG 32 steps, attnscope / captum: {rate('ig', 'attnscope') / rate('ig', 'captum'):.2f}×")
    if rate("scorecam", "attnscope") and rate("forward", "torch"):
        floor = rate("forward", "torch") / 512
        print(f"Score-CAM layer4: {floor / rate('scorecam', 'attnscope'):.2f}× its floor (512 masked forwards)")
    if rate("scorecam", "attnscope") and rate("scorecam", "pytorch-grad-cam"):
        ratio = rate("scorecam", "attnscope") / rate("scorecam", "pytorch-grad-cam")
        print(f"Score-CAM, attnscope / pytorch-grad-cam: {ratio:.2f}×")
    if rate("leaderboard", "attnscope") and rate("forward", "torch"):
        ratio = rate("leaderboard", "attnscope") / rate("forward", "torch")
        print(f"default leaderboard / plain forward throughput: {ratio:.5f} (no peer has a leaderboard)")


def _child(args: argparse.Namespace) -> dict:
    """The row of the one (part, library) this child process times."""
    part, library = args.child
    if part == "leaderboard-methods":
        return methods_child()
    if part == "leaderboard-estimate":
        return leaderboard_estimate(_model(), 512)
    if part == "leaderboard":
        return leaderboard_child(args.n_leaderboard, args.workers, min(args.batch, args.n_leaderboard))
    if part == "leaderboard-fast":
        return fast_child(args.n_leaderboard)
    n = {"ig": args.n_ig, "scorecam": args.n_scorecam}.get(part, args.n)
    batch = min(args.batch, n)
    return child(part, library, n + batch, args.workers, batch)


def _fresh(args: argparse.Namespace, part: str, library: str) -> dict:
    """The row of (part, library), timed alone in a fresh process."""
    argv = ["--child", part, library, "--n", str(args.n), "--n-ig", str(args.n_ig), "--n-scorecam",
            str(args.n_scorecam), "--n-leaderboard", str(args.n_leaderboard), "--batch", str(args.batch),
            "--workers", str(args.workers)]
    return fresh_row(__file__, argv)


if __name__ == "__main__":
    main()
