"""Speed of attnscope's post-hoc maps against pytorch-grad-cam, captum and torchcam, in one process.

Part "cams": torchvision resnet18 (random weights), batch 16, 224 px, CPU. Times one plain forward
pass (no_grad: the limit), then the 5 gradient CAMs (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM,
LayerCAM) computed by attnscope in one call and by each peer with what it offers.
Part "scorecam": Score-CAM on a SmallCNN trained here on ClutteredDigits; checks that the maps are
identical to each peer's (under the peer's variant) and times them.
Parts "top5" (Grad-CAM of five targets per image) and "train" (a differentiable Grad-CAM training step):
`bench/engine_parts.py`.
Parts "lrp", "fullgrad" (resnet18, batch 16, 224 px: against zennit / pytorch-grad-cam and one forward +
backward) and "rise" (4,000 masks on the trained SmallCNN, against TorchRay): the methods of issue 16.

Every timing is the median over `--repeats` rounds, methods interleaved within a round, and is
reported as a ratio to the plain forward pass of the same rounds. Every method adds its hooks and
removes them within its own timed call (pytorch-grad-cam's objects are used as context managers):
a pytorch-grad-cam object kept alive leaves hooks on the model that store every later forward's
activations, which slowed the other methods' passes by up to 2 × in an earlier version of this script.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/explain_speed.py --threads 1

`--alone` times every entry of a part in its own fresh process instead (`--only NAME` in a child, with the
plain forward of the same process as its base): no library warms the allocator, the caches or the
kernels for another, and no peer's hooks or objects outlive their call in the process another runs in.
The trained SmallCNN is trained once and shared through `--weights`.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/explain_speed.py --part cams --alone
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import engine_parts  # bench/engine_parts.py: this folder is on the path when the script runs
import numpy as np
import torch
from alone import fresh
from torch import nn

import attnscope as ats
from attnscope.explain import model_guard
from attnscope.maps import normalize

CAMS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")


def forward_no_grad(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One plain forward pass without gradients: the limit every method is compared with."""

    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCK["cpu"]  # set by --clock
ONLY: str | None = None  # --only: the one entry this (child) process times; "?" lists the entries
WEIGHTS: str | None = None  # --weights: where the trained SmallCNN is kept between processes
LIST = "?"


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function over `repeats` interleaved rounds (after one warm-up each).

    The clock is this process's CPU time by default (`--clock cpu`): on a machine shared with other
    jobs, wall time mostly measures when the scheduler let us run; with one thread, CPU time is the work.
    """
    if ONLY is not None:
        return _alone(fns, repeats)
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _alone(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """`--only`: print the entries (LIST), or time the one asked for and the table's base (its first entry, the
    plain forward) in this process and print them as one JSON line; every other entry is NaN, not run."""
    base = next(iter(fns))
    if ONLY == LIST:
        print(json.dumps({"entries": [k for k in fns if k != base]}), flush=True)
    elif ONLY in fns and ONLY != base:
        fns[ONLY]()  # warm-up of the one library in this process
        runs: dict[str, list[float]] = {base: [], ONLY: []}
        fns[base]()
        for _ in range(repeats):
            for name in (base, ONLY):
                t = clock()
                fns[name]()
                runs[name].append(clock() - t)
        seconds = {k: statistics.median(v) for k, v in runs.items()}
        print(json.dumps({"entry": ONLY, "seconds": seconds[ONLY], "base": base, "base_seconds": seconds[base]}),
              flush=True)
    return {k: math.nan for k in fns}


def run_alone(part: str, args: argparse.Namespace) -> None:
    """Every entry of `part` in a fresh child process; the table of their times over each child's own forward."""
    weights = args.weights or str(Path(tempfile.mkdtemp(prefix="attnscope-bench-")) / "smallcnn.pt")
    common = ["--part", part, "--threads", str(args.threads), "--clock", args.clock,
              "--repeats", str(args.repeats), "--train-steps", str(args.train_steps), "--images", str(args.images),
              "--batch-size", str(args.batch_size), "--weights", weights]

    def child(only: str) -> list[dict]:
        return fresh(__file__, [*common, "--only", only])

    listings = child(LIST)  # one per table of the part; an entry may be in several (the same step, two models)
    entries = list(dict.fromkeys(e for listing in listings for e in listing["entries"]))
    print(f"\n{part}: each entry alone in a fresh process, {args.clock} time, median of {args.repeats}\n")
    print("| what | seconds | its process's base | × base |\n| --- | ---: | ---: | ---: |")
    for entry in entries:
        rows = child(entry)
        for k, row in enumerate(rows):
            name = entry if len(rows) == 1 else f"{entry} (table {k + 1} of the part)"
            print(f"| {name} | {row['seconds']:.3f} | {row['base_seconds']:.3f} | "
                  f"{row['seconds'] / row['base_seconds']:.2f} |", flush=True)


def report(title: str, times: dict[str, float], base: str, notes: dict[str, str]) -> None:
    print(f"\n{title}\n")
    print("| what | seconds | × forward | note |\n| --- | ---: | ---: | --- |")
    for name, sec in times.items():
        print(f"| {name} | {sec:.3f} | {sec / times[base]:.2f} | {notes.get(name, '')} |")


# --- part 1: the five gradient CAMs ---------------------------------------------------------------


def peers_cams(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> dict[str, Callable[[], object]]:
    import pytorch_grad_cam as pgc
    import torchcam.methods as tc
    from captum.attr import LayerGradCam, LayerGradientXActivation
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    pgc_classes = (pgc.GradCAM, pgc.GradCAMPlusPlus, pgc.XGradCAM, pgc.HiResCAM, pgc.LayerCAM)

    def pgc_all(classes_: tuple = pgc_classes) -> None:
        for cls in classes_:
            with cls(model=model, target_layers=[model.layer4]) as cam:
                cam(input_tensor=x, targets=targets)

    def torchcam(classes_: tuple) -> Callable[[], None]:
        def run() -> None:
            for cls in classes_:
                with cls(model, "layer4", input_shape=tuple(x.shape[1:])) as extractor:
                    extractor(class_idx=classes.tolist(), scores=model(x))

        return run

    def captum_two() -> None:
        LayerGradCam(model, model.layer4).attribute(x, target=classes, relu_attributions=True)
        LayerGradientXActivation(model, model.layer4).attribute(x, target=classes).sum(dim=1).clamp_min(0)

    return {
        "pytorch-grad-cam, 5 CAMs": pgc_all,
        "pytorch-grad-cam, Grad-CAM": lambda: pgc_all(pgc_classes[:1]),
        "torchcam, 4 CAMs": torchcam((tc.GradCAM, tc.GradCAMpp, tc.XGradCAM, tc.LayerCAM)),
        "torchcam, Grad-CAM": torchcam((tc.GradCAM,)),
        "captum, 2 CAMs": captum_two,
        "captum, Grad-CAM": lambda: LayerGradCam(model, model.layer4).attribute(x, target=classes),
    }


def bench_cams(repeats: int) -> None:
    torch.manual_seed(0)
    model = ats.models.get("resnet18").eval()
    x = torch.randn(16, 3, 224, 224)
    with torch.no_grad():
        classes = model(x).argmax(dim=1)

    fns = {
        "forward (no_grad)": forward_no_grad(model, x),
        "forward + backward to the input": lambda: (
            model(x.requires_grad_()).gather(1, classes[:, None]).sum().backward()
        ),
        "attnscope, 5 CAMs": lambda: ats.explain(model, x, CAMS, layer="layer4"),
        "attnscope, Grad-CAM": lambda: ats.explain(model, x, "gradcam", layer="layer4"),
        **peers_cams(model, x, classes),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = timed(fns, repeats)
    notes = {
        "attnscope, 5 CAMs": "one call, one forward + one backward, maps upsampled to 224 px",
        "pytorch-grad-cam, 5 CAMs": "5 objects, each its own forward + backward, maps resized to 224 px",
        "torchcam, 4 CAMs": "no HiResCAM; one forward + backward per method; maps at 7 × 7",
        "captum, 2 CAMs": "LayerGradCam + LayerGradientXActivation (HiResCAM); captum has no other of the 5",
        "captum, Grad-CAM": "maps at 7 × 7",
    }
    report(f"resnet18, batch 16, 224 px, {torch.get_num_threads()} thread(s)", times, "forward (no_grad)", notes)


# --- part 2: Score-CAM on a trained SmallCNN ------------------------------------------------------


def train_smallcnn(steps: int, seed: int = 0, n: int = 4000, batch: int = 32) -> nn.Module:
    """A SmallCNN trained `steps` AdamW steps (one-cycle schedule) on `n` ClutteredDigits; in eval mode.
    With `--weights` the trained weights are read from there when present, and kept there otherwise."""
    if WEIGHTS is not None and Path(WEIGHTS).exists():
        model = ats.models.get("smallcnn")
        model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
        return model.eval()
    torch.manual_seed(seed)
    data = ats.data.ClutteredDigits("train", n=n, seed=seed)
    images = torch.stack([data[i].image for i in range(n)])  # (n, 3, 64, 64), generated once
    labels = torch.tensor([data[i].label for i in range(n)])
    model = ats.models.get("smallcnn")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for step in range(steps):
        idx = torch.randint(n, (batch,), generator=torch.Generator().manual_seed(seed * 100_003 + step))
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    if WEIGHTS is not None:
        torch.save(model.state_dict(), WEIGHTS)
    return model.eval()


def bench_scorecam(repeats: int, steps: int, n_images: int, batch_size: int) -> None:
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    t = time.perf_counter()
    model = train_smallcnn(steps)
    test = ats.data.ClutteredDigits("test", n=n_images, seed=1)
    x = torch.stack([test[i].image for i in range(n_images)])
    labels = torch.tensor([test[i].label for i in range(n_images)])
    with torch.no_grad():
        classes = model(x).argmax(dim=1)
    print(
        f"\ntrained SmallCNN in {time.perf_counter() - t:.0f} s ({steps} steps); "
        f"test accuracy on these {n_images} images: {(classes == labels).float().mean():.2f}"
    )

    with torch.no_grad():
        acts = model.features(x)  # (B, C, h, w)
    rows = normalize(acts.flatten(0, 1)).flatten(1)
    constant = int((rows == 0).all(dim=1).sum())
    distinct = sum(
        len(torch.unique(normalize(a).flatten(1)[(normalize(a).flatten(1) != 0).any(1)], dim=0)) for a in acts
    )
    print(
        f"layer `features`: {acts.shape[1]} channels × {n_images} images = {rows.shape[0]} masks, "
        f"{constant} constant, {distinct} distinct non-constant → {distinct + 1} masked passes"
    )

    pgc_opts = {"weights": "channel-softmax", "align_corners": True, "batch_size": batch_size}
    tc_opts = {"weights": "channel-softmax", "upsample_first": False, "batch_size": batch_size}
    targets = [ClassifierOutputTarget(int(c)) for c in classes]

    def pgc() -> np.ndarray:
        with ScoreCAM(model=model, target_layers=[model.features]) as cam:
            cam.batch_size = batch_size
            return cam(input_tensor=x, targets=targets)

    def torchcam() -> torch.Tensor:
        with TorchcamScoreCAM(model, "features", batch_size=batch_size, input_shape=(3, 64, 64)) as ext:
            with torch.no_grad():
                model(x)
            return ext(class_idx=classes.tolist())[0]

    def ours(opts: dict) -> Callable[[], ats.AttentionMap]:
        return lambda: ats.explain(model, x, "scorecam", targets=classes, layer="features", options={"scorecam": opts})[
            "scorecam"
        ]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pytorch_grad_cam.score_cam as pgc_module  # its per-image progress bar, off for the timing

        pgc_module.tqdm = types.SimpleNamespace(tqdm=lambda iterable, **_: iterable)
        if ONLY is None:  # a child of --alone runs nothing but its own entry
            diff_pgc = (ours(pgc_opts)().normalized() - torch.from_numpy(pgc())).abs().max()
            diff_tc = (normalize(ours(tc_opts)().lowres) - torchcam()).abs().max()
            print(f"max |difference| of normalised maps: vs pytorch-grad-cam {diff_pgc:.1e}, "
                  f"vs torchcam {diff_tc:.1e}")

        times = timed(
            {
                "forward (no_grad)": forward_no_grad(model, x),
                "attnscope (pytorch-grad-cam variant)": ours(pgc_opts),
                "pytorch-grad-cam ScoreCAM": pgc,
                "attnscope (torchcam variant)": ours(tc_opts),
                "torchcam ScoreCAM": torchcam,
                "attnscope (torchcam variant), NCHW": ours({**tc_opts, "channels_last": False}),
                "attnscope, default (paper)": ours({"batch_size": batch_size}),
            },
            repeats,
        )
    report(
        f"Score-CAM, SmallCNN, {n_images} images 64 px, layer `features`, batch size {batch_size}, "
        f"{torch.get_num_threads()} thread(s)",
        times,
        "forward (no_grad)",
        {},
    )
    vs_pgc = times["pytorch-grad-cam ScoreCAM"] / times["attnscope (pytorch-grad-cam variant)"]
    vs_tc = times["torchcam ScoreCAM"] / times["attnscope (torchcam variant)"]
    vs_tc_nchw = times["torchcam ScoreCAM"] / times["attnscope (torchcam variant), NCHW"]
    print(
        f"\nspeed-up (defaults, channels_last=True): vs pytorch-grad-cam {vs_pgc:.2f}×, vs torchcam {vs_tc:.2f}× "
        f"({vs_tc_nchw:.2f}× vs torchcam with channels_last=False)"
    )
    bench_ablation(model, x, classes, repeats, batch_size)


def bench_ablation(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, repeats: int, batch_size: int) -> None:
    """Ablation-CAM on the same model and images: identical maps, and the time of each."""
    import pytorch_grad_cam.ablation_cam as pgc_module  # its progress bar, off for the timing
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    pgc_module.tqdm = types.SimpleNamespace(tqdm=lambda iterable, **_: iterable)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]

    def pgc() -> np.ndarray:
        with AblationCAM(model=model, target_layers=[model.features], batch_size=batch_size) as cam:
            return cam(input_tensor=x, targets=targets)

    def ours() -> ats.AttentionMap:
        return ats.explain(
            model,
            x,
            "ablationcam",
            targets=classes,
            layer="features",
            options={"ablationcam": {"batch_size": batch_size}},
        )["ablationcam"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ONLY is None:
            diff = (ours().normalized() - torch.from_numpy(pgc())).abs().max()
            print(f"\nAblation-CAM: max |difference| of normalised maps vs pytorch-grad-cam {diff:.1e}")

        times = timed(
            {
                "forward (no_grad)": forward_no_grad(model, x),
                "attnscope AblationCAM": ours,
                "pytorch-grad-cam AblationCAM": pgc,
            },
            repeats,
        )
    report(f"Ablation-CAM, same SmallCNN and images, batch size {batch_size}", times, "forward (no_grad)", {})
    print(
        f"\nspeed-up: vs pytorch-grad-cam {times['pytorch-grad-cam AblationCAM'] / times['attnscope AblationCAM']:.2f}×"
    )


# --- parts lrp, fullgrad, rise: the methods of issue 16 --------------------------------------------------------


def resnet18_batch(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """resnet18 (random weights, random BatchNorm statistics so that every layer has a bias), 16 images of 224 px."""
    torch.manual_seed(seed)
    model = ats.models.get("resnet18").eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
        x = torch.randn(16, 3, 224, 224, generator=g)
        classes = model(x).argmax(dim=1)
    return model, x, classes


def forward_backward(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Callable[[], None]:
    """One forward + one backward to the input (parameters frozen, as in every attnscope pass): the LRP limit."""

    def run() -> None:
        with model_guard(model):
            xx = x.detach().requires_grad_()
            torch.autograd.grad(model(xx).gather(1, classes[:, None]).sum(), xx)

    return run


def bench_lrp(repeats: int) -> None:
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    model, x, classes = resnet18_batch()

    def zennit_direct() -> None:
        with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
            attributor(x, torch.eye(1000)[classes])

    times = timed({
        "forward (no_grad)": forward_no_grad(model, x),
        "forward + backward to the input": forward_backward(model, x, classes),
        "attnscope lrp (epsilon-plus-flat, ResNet canonizer)": lambda: ats.explain(model, x, "lrp", targets=classes),
        "zennit Gradient + EpsilonPlusFlat, called directly": zennit_direct,
    }, repeats)
    report(f"LRP, resnet18, batch 16, 224 px, {torch.get_num_threads()} thread(s)", times, "forward (no_grad)", {})
    ratio = times["attnscope lrp (epsilon-plus-flat, ResNet canonizer)"] / times["forward + backward to the input"]
    print(f"\nlrp / (forward + backward): {ratio:.2f}×")


def bench_fullgrad(repeats: int) -> None:
    from pytorch_grad_cam import FullGrad

    model, x, classes = resnet18_batch()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in classes]

    def pgc() -> np.ndarray:
        with FullGrad(model=model, target_layers=[]) as cam:
            return cam(input_tensor=x, targets=targets)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ONLY is None:  # a child of --alone runs nothing but its own entry
            diff = (ats.explain(model, x, "fullgrad", targets=classes)["fullgrad"].normalized()
                    - torch.from_numpy(pgc())).abs().max()
            print(f"\nFullGrad: max |difference| of normalised maps vs pytorch-grad-cam {diff:.1e}")
        times = timed({
            "forward (no_grad)": forward_no_grad(model, x),
            "forward + backward to the input": forward_backward(model, x, classes),
            "attnscope fullgrad": lambda: ats.explain(model, x, "fullgrad", targets=classes),
            "pytorch-grad-cam FullGrad": pgc,
        }, repeats)
    report(f"FullGrad, resnet18, batch 16, 224 px, {torch.get_num_threads()} thread(s)", times, "forward (no_grad)",
           {"attnscope fullgrad": "one forward + one backward; ψ at each layer's resolution, one upsampling per layer",
            "pytorch-grad-cam FullGrad": "backward into the parameters; every channel resized to 224 px in numpy"})
    print(f"\nspeed-up vs pytorch-grad-cam: {times['pytorch-grad-cam FullGrad'] / times['attnscope fullgrad']:.2f}×")


def bench_rise(repeats: int, steps: int, n_images: int) -> None:
    from torchray.attribution.rise import rise

    model = train_smallcnn(steps)
    test = ats.data.ClutteredDigits("test", n=n_images, seed=1)
    x = torch.stack([test[i].image for i in range(n_images)])
    with torch.no_grad():
        classes = model(x).argmax(dim=1)
    opts = {"n": 4000, "score": "sigmoid", "batch_size": 64, "channels_last": False}
    if ONLY is None:  # a child of --alone runs nothing but its own entry
        ours = ats.explain(model, x, "rise", targets=classes, options={"rise": opts})["rise"].values
        ref = rise(model, x, seed=0, num_masks=4000, num_cells=7, batch_size=64)[torch.arange(n_images), classes] / 0.5
        print(f"\nRISE: max |difference| vs TorchRay {float((ours - ref).abs().max()):.1e} (maps up to "
              f"{float(ref.abs().max()):.2f})")
    times = timed({
        "forward (no_grad)": forward_no_grad(model, x),
        "attnscope rise, 4000 masks (NCHW)": lambda: ats.explain(model, x, "rise", targets=classes,
                                                                  options={"rise": opts}),
        "attnscope rise, 4000 masks (channels_last auto)": lambda: ats.explain(
            model, x, "rise", targets=classes, options={"rise": {**opts, "channels_last": "auto"}}),
        "TorchRay rise, 4000 masks": lambda: rise(model, x, seed=0, num_masks=4000, num_cells=7, batch_size=64),
    }, repeats)
    per_image = {f"{k}, per image": v / n_images for k, v in times.items() if k != "forward (no_grad)"}
    report(f"RISE, SmallCNN, {n_images} images 64 px, 4000 masks in batches of 64, {torch.get_num_threads()} "
           "thread(s)", {**times, **per_image}, "forward (no_grad)", {})


PARTS = ("cams", "scorecam", "top5", "train", "lrp", "fullgrad", "rise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*PARTS, "all"),
                        default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=tuple(CLOCK), default="cpu", help="what a timing measures (see `timed`)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--alone", action="store_true", help="every entry in its own fresh process (every part)")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # a child of --alone
    parser.add_argument("--weights", default=None, help="keep / read the trained SmallCNN here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global clock, ONLY, WEIGHTS
    clock, ONLY, WEIGHTS = CLOCK[args.clock], args.only, args.weights
    if args.alone:
        for part in PARTS if args.part == "all" else (args.part,):
            run_alone(part, args)
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} rounds, {args.clock} time")
    if args.part in ("cams", "all"):
        bench_cams(args.repeats)
    if args.part in ("scorecam", "all"):
        bench_scorecam(args.repeats, args.train_steps, args.images, args.batch_size)
    if args.part in ("top5", "all"):
        engine_parts.bench_top5(args.repeats, timed, report, forward_no_grad)
    if args.part in ("train", "all"):
        engine_parts.bench_differentiable(args.repeats, timed, report)
    if args.part in ("lrp", "all"):
        bench_lrp(args.repeats)
    if args.part in ("fullgrad", "all"):
        bench_fullgrad(args.repeats)
    if args.part in ("rise", "all"):
        bench_rise(args.repeats, args.train_steps, args.images)


if __name__ == "__main__":
    main()
