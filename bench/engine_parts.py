"""Two parts of `bench/explain_speed.py` for engine v2: K targets per call, and differentiable maps.

Part "top5": Grad-CAM of each image's five best classes on torchvision resnet18 (random weights), batch 16,
224 px — attnscope's one call with `targets` (B, 5) against pytorch-grad-cam, torchcam and captum doing the
same five targets the way each offers.
Part "train": one training step (forward, cross-entropy, backward to the weights, optimizer step) against
the same step with a differentiable Grad-CAM penalty (forward, map, CE + λ · share of the map outside a
box, backward to the weights, step) — SmallCNN on ClutteredDigits (64 px, batch 64) and resnet18 (224 px,
batch 16). Both ratios are taken within the same interleaved rounds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

import attnscope as ats


def peers_top5(model: nn.Module, x: torch.Tensor, top: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The peers computing Grad-CAM for each of the K target columns of `top` (B, K)."""
    import pytorch_grad_cam as pgc
    import torchcam.methods as tc
    from captum.attr import LayerGradCam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def grad_cam() -> None:  # one call per target column: its API takes one target per image
        with pgc.GradCAM(model=model, target_layers=[model.layer4]) as cam:
            for k in range(top.shape[1]):
                cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in top[:, k]])

    def torchcam() -> None:  # its best case: one forward, K backward passes over the kept graph
        with tc.GradCAM(model, "layer4", input_shape=tuple(x.shape[1:])) as extractor:
            scores = model(x)
            for k in range(top.shape[1]):
                extractor(class_idx=top[:, k].tolist(), scores=scores, retain_graph=k < top.shape[1] - 1)

    def captum() -> None:
        method = LayerGradCam(model, model.layer4)
        for k in range(top.shape[1]):
            method.attribute(x, target=top[:, k], relu_attributions=True)

    return {"pytorch-grad-cam, 5 targets": grad_cam, "torchcam, 5 targets": torchcam, "captum, 5 targets": captum}


def bench_top5(repeats: int, timed, report, forward_no_grad) -> dict[str, float]:
    torch.manual_seed(0)
    model = ats.models.get("resnet18").eval()
    x = torch.randn(16, 3, 224, 224)
    with torch.no_grad():
        top = model(x).topk(5, dim=1).indices  # (16, 5)
    fns = {
        "forward (no_grad)": forward_no_grad(model, x),
        "attnscope, Grad-CAM, 1 target": lambda: ats.explain(model, x, "gradcam", targets=top[:, 0], layer="layer4"),
        "attnscope, Grad-CAM, 5 targets": lambda: ats.explain(model, x, "gradcam", targets=top, layer="layer4"),
        "attnscope, 5 CAMs × 5 targets": lambda: ats.explain(
            model, x, ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"), targets=top, layer="layer4"),
        **peers_top5(model, x, top),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = timed(fns, repeats)
    notes = {
        "attnscope, Grad-CAM, 5 targets": "one forward; 5 gradients from one batched backward to layer4",
        "torchcam, 5 targets": "one forward, 5 backward passes (retain_graph); maps at 7 × 7",
        "pytorch-grad-cam, 5 targets": "one call per target: 5 forward + 5 backward passes",
        "captum, 5 targets": "one attribute call per target: 5 forward + 5 backward passes; maps at 7 × 7",
    }
    report(f"Grad-CAM of the top-5 classes, resnet18, batch 16, 224 px, {torch.get_num_threads()} thread(s)",
           times, "forward (no_grad)", notes)
    return times


def _outside(size: int, b: int) -> torch.Tensor:
    """1 outside a centred box of half the image, as guidance's allowed region."""
    out = torch.ones(b, size, size)
    out[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 0
    return out


def training_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str) -> dict[str, Callable]:
    """A plain training step and the same step with a differentiable Grad-CAM penalty."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    outside = _outside(x.shape[-1], x.shape[0])

    def plain() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def guided() -> None:
        opt.zero_grad()
        found = ats.explain(model, x, "gradcam", targets=y, layer=layer, differentiable=True)
        cam = found["gradcam"].values.clamp_min(0)  # (B, H, W)
        share = (cam * outside).flatten(1).sum(1) / cam.flatten(1).sum(1).clamp_min(1e-12)
        (nn.functional.cross_entropy(found.logits, y) + share.mean()).backward()
        opt.step()

    return {"training step": plain, "training step + differentiable Grad-CAM loss": guided}


def bench_differentiable(repeats: int, timed, report) -> dict[str, dict[str, float]]:
    results = {}
    torch.manual_seed(0)
    small = ats.models.get("smallcnn").train()
    data = ats.data.ClutteredDigits("train", n=64, seed=0)
    x = torch.stack([data[i].image for i in range(64)])
    y = torch.tensor([data[i].label for i in range(64)])
    resnet = ats.models.get("resnet18").train()
    xr, yr = torch.randn(16, 3, 224, 224), torch.randint(0, 1000, (16,))
    for title, model, images, labels, layer in (
        ("SmallCNN, ClutteredDigits 64 px, batch 64", small, x, y, "features"),
        ("resnet18, 224 px, batch 16", resnet, xr, yr, "layer4"),
    ):
        times = timed(training_steps(model, images, labels, layer), repeats)
        report(f"Differentiable Grad-CAM step, {title}, {torch.get_num_threads()} thread(s)", times,
               "training step", {})
        results[title] = times
    return results
