"""What `bench/ladder.py` runs for each registered method: the workload (model, batch, options), each peer's
call doing the same work, and the passes the method's definition requires (its floor).

A peer is the library's own entry point used as its documentation shows, at its best reasonable setting (a
context manager where it offers one, so hooks never outlive the call; captum's `internal_batch_size` set where
its default would put every path point of the batch into one pass). Peers: pytorch-grad-cam (`pgc`), torchcam,
captum, zennit, TorchRay. Where a peer's variant of the method differs in a constant (Score-CAM's channel
softmax), the cost is the same: it runs the same passes.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Call = Callable[[], object]
Builder = Callable[[nn.Module, torch.Tensor, torch.Tensor], Call]


@dataclass(frozen=True)
class Workload:
    """One method's ladder entry: model ("resnet18", "vit", "ltpa"), images per call, our options, the peers
    (name → builder of the call), and the required passes per image: (forwards, forward + backward pairs)."""

    model: str = "resnet18"
    batch: int = 16
    options: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, Builder] = field(default_factory=dict)
    forwards: float = 1.0
    forward_backwards: float = 0.0
    how: str = "one forward"
    note: str = ""
    methods: tuple[str, ...] = ()  # the methods of the call when the entry is not one method's name
    top: int = 0  # explain each image's `top` best classes ((B, top) targets) instead of its prediction


def _pgc(cls_name: str, **kw: Any) -> Builder:
    def build(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        cls = getattr(pgc, cls_name)

        def run() -> object:
            with cls(model=model, target_layers=[model.layer4], **kw) as cam:
                return cam(input_tensor=x, targets=targets)

        return run

    return build


def _torchcam(cls_name: str, **kw: Any) -> Builder:
    def build(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
        import torchcam.methods as tc

        cls = getattr(tc, cls_name)
        needs_grad = cls_name not in ("CAM", "ScoreCAM", "SSCAM", "ISCAM")

        def run() -> object:
            with cls(model, "layer4", input_shape=tuple(x.shape[1:]), **kw) as extractor:
                if needs_grad:
                    return extractor(class_idx=classes.tolist(), scores=model(x))
                with torch.no_grad():
                    scores = model(x)
                return extractor(class_idx=classes.tolist(), scores=scores)

        return run

    return build


def _captum(make: Callable[[nn.Module], Any], **kw: Any) -> Builder:
    def build(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
        method = make(model)
        return lambda: method.attribute(x, target=classes, **kw)

    return build


def _captum_layer_gradcam(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from captum.attr import LayerGradCam

    return lambda: LayerGradCam(model, model.layer4).attribute(x, target=classes, relu_attributions=True)


def _captum_hirescam(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from captum.attr import LayerGradientXActivation

    return lambda: LayerGradientXActivation(model, model.layer4).attribute(x, target=classes).sum(1).clamp_min(0)


def unique_relus(model: nn.Module) -> nn.Module:
    """A copy of a torchvision ResNet whose blocks use one ReLU module per call (captum's DeepLift refuses a module
    used twice): the same function, the same weights."""
    import copy

    from torchvision.models.resnet import BasicBlock

    def forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + identity)

    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, BasicBlock):
            m.relu, m.relu2, m.forward = nn.ReLU(), nn.ReLU(), types.MethodType(forward, m)
    twin.relu = nn.ReLU()
    return twin


def _captum_deeplift(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from captum.attr import DeepLift

    method = DeepLift(unique_relus(model))
    return lambda: method.attribute(x, torch.zeros_like(x), target=classes)


def uniform_references(x: torch.Tensor, m: int, seed: int = 0) -> torch.Tensor:
    """`m` reference images of uniform noise in the batch's value range (what our "uniform" references are)."""
    u = torch.rand((m, *x.shape[1:]), generator=torch.Generator().manual_seed(seed))
    return x.min() + (x.max() - x.min()) * u


def _captum_deepliftshap(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from captum.attr import DeepLiftShap

    method, refs = DeepLiftShap(unique_relus(model)), uniform_references(x, 8)
    return lambda: method.attribute(x, refs, target=classes)


def _captum_gradientshap(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from captum.attr import GradientShap

    method, refs = GradientShap(model), uniform_references(x, 8)
    return lambda: method.attribute(x, refs, target=classes, n_samples=50)


def _captum_smoothgrad(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from captum.attr import NoiseTunnel, Saliency

    method = NoiseTunnel(Saliency(model))
    stdev = float(0.15 * (x.max() - x.min()))
    return lambda: method.attribute(x, nt_type="smoothgrad", nt_samples=50, nt_samples_batch_size=len(x),
                                    stdevs=stdev, target=classes, abs=False)


def _zennit(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    def run() -> object:
        with Gradient(model=model, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
            return attributor(x, torch.eye(1000)[classes])

    return run


def _torchray_rise(n: int) -> Builder:
    def build(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
        from torchray.attribution.rise import rise

        return lambda: rise(model, x, seed=0, num_masks=n, num_cells=7, batch_size=32)

    return build


def _torchray_extremal(steps: int) -> Builder:
    def build(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
        from torchray.attribution.extremal_perturbation import extremal_perturbation

        return lambda: extremal_perturbation(model, x, int(classes[0]), areas=[0.1], max_iter=steps)

    return build


def _torchcam_top(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    """torchcam's best use for K targets: one forward, K backward passes over the kept graph (maps at 7 × 7)."""
    import torchcam.methods as tc

    def run() -> object:
        with tc.GradCAM(model, "layer4", input_shape=tuple(x.shape[1:])) as extractor:
            scores = model(x)
            return [extractor(class_idx=classes[:, k].tolist(), scores=scores, retain_graph=k < classes.shape[1] - 1)
                    for k in range(classes.shape[1])]

    return run


def _captum_top(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    from captum.attr import LayerGradCam

    method = LayerGradCam(model, model.layer4)
    return lambda: [method.attribute(x, target=classes[:, k], relu_attributions=True) for k in range(classes.shape[1])]


def _torchcam_four(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    """torchcam's four of the five gradient CAMs (it has no HiResCAM), one extractor each."""
    calls = [_torchcam(name)(model, x, classes) for name in ("GradCAM", "GradCAMpp", "XGradCAM", "LayerCAM")]
    return lambda: [call() for call in calls]


def _pgc_five(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    calls = [_pgc(name)(model, x, classes) for name in ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM",
                                                          "LayerCAM")]
    return lambda: [call() for call in calls]


def _torchcam_legrad(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> Call:
    import torchcam.methods as tc

    def run() -> object:
        blocks = list(model.encoder.layers)
        with tc.LeGrad(model, blocks) as extractor:
            return extractor(class_idx=classes.tolist(), scores=model(x))

    return run


CHANNELS, WINDOWS = 512, 27 * 27  # resnet18 layer4; occlusion's 16 px windows at stride 8 over 224 px
RISE_N, SS_N, IS_N, EXTREMAL_STEPS = 1000, 2, 2, 50  # the sampled perturbation methods, cut to ladder size
CAM = dict(forwards=1.0, how="one forward (the backward to layer4 is the head only)")
GRAD = dict(forwards=0.0, forward_backwards=1.0, how="one forward + backward to the input")
WORKLOADS: dict[str, Workload] = {
    "cam": Workload(peers={"torchcam": _torchcam("CAM")}, **CAM),
    "gradcam": Workload(peers={"torchcam": _torchcam("GradCAM"), "captum": _captum_layer_gradcam,
                               "pytorch-grad-cam": _pgc("GradCAM")}, **CAM),
    "gradcam++": Workload(peers={"torchcam": _torchcam("GradCAMpp"), "pytorch-grad-cam": _pgc("GradCAMPlusPlus")},
                          **CAM),
    "xgradcam": Workload(peers={"torchcam": _torchcam("XGradCAM"), "pytorch-grad-cam": _pgc("XGradCAM")}, **CAM),
    "hirescam": Workload(peers={"captum": _captum_hirescam, "pytorch-grad-cam": _pgc("HiResCAM")}, **CAM),
    "layercam": Workload(peers={"torchcam": _torchcam("LayerCAM"), "pytorch-grad-cam": _pgc("LayerCAM")}, **CAM),
    "eigencam": Workload(peers={"pytorch-grad-cam": _pgc("EigenCAM")}, **CAM),
    "eigengradcam": Workload(peers={"pytorch-grad-cam": _pgc("EigenGradCAM")}, **CAM),
    "kpcacam": Workload(peers={"pytorch-grad-cam": _pgc("KPCA_CAM")}, **CAM),
    "finercam": Workload(peers={"pytorch-grad-cam": _pgc("FinerCAM")}, **CAM),
    "smoothgradcam++": Workload(peers={"torchcam": _torchcam("SmoothGradCAMpp")}, forwards=1.0,
                                forward_backwards=4.0, how="1 forward + 4 noisy forward + backward to layer4"),
    "saliency": Workload(peers={"captum": _captum(lambda m: __import__("captum.attr").attr.Saliency(m), abs=False)},
                         **GRAD),
    "inputxgrad": Workload(peers={"captum": _captum(lambda m: __import__("captum.attr").attr.InputXGradient(m))},
                           **GRAD),
    "guided-backprop": Workload(peers={"captum": _captum(lambda m: __import__("captum.attr").attr.GuidedBackprop(m))},
                                **GRAD),
    "guided-gradcam": Workload(peers={"captum": _captum(
        lambda m: __import__("captum.attr").attr.GuidedGradCam(m, m.layer4))}, **GRAD),
    "fullgrad": Workload(peers={"pytorch-grad-cam": _pgc("FullGrad")}, **GRAD),
    "lrp": Workload(peers={"zennit": _zennit}, **GRAD),
    "deeplift": Workload(peers={"captum": _captum_deeplift}, forwards=1 / 16, forward_backwards=1.0,
                         how="one forward + backward of the images, one forward of the zero baseline"),
    "ig": Workload(batch=4, peers={"captum": _captum(lambda m: __import__("captum.attr").attr.IntegratedGradients(m),
                                                     n_steps=50, internal_batch_size=16)},
                   forwards=0.0, forward_backwards=50.0, how="50 path points, each a forward + backward"),
    "smoothgrad": Workload(batch=4, peers={"captum": _captum_smoothgrad}, forwards=0.0, forward_backwards=50.0,
                           how="50 noisy copies, each a forward + backward"),
    "gradientshap": Workload(batch=4, peers={"captum": _captum_gradientshap}, forwards=0.0, forward_backwards=50.0,
                             how="50 samples, each a forward + backward"),
    "deepliftshap": Workload(batch=4, peers={"captum": _captum_deepliftshap}, forwards=8.0, forward_backwards=8.0,
                             how="8 references: 8 forwards of the references, 8 forward + backward of the image"),
    "scorecam": Workload(batch=1, peers={"pytorch-grad-cam": _pgc("ScoreCAM"), "torchcam": _torchcam("ScoreCAM")},
                         forwards=CHANNELS + 1.0, how="one forward per channel of layer4 (512) + the shared pass"),
    "scorecam, fold_batchnorm": Workload(batch=1, methods=("scorecam",), options={"fold_batchnorm": True},
                                         peers={"pytorch-grad-cam": _pgc("ScoreCAM")}, forwards=CHANNELS + 1.0,
                                         how="as Score-CAM; its masked forwards through the BatchNorm-folded copy",
                                         note="maps equal to rounding"),
    "ablationcam": Workload(batch=1, peers={"pytorch-grad-cam": _pgc("AblationCAM")},
                            forwards=1.0, how="one forward (the 512 ablations run the layers after layer4 only)"),
    "occlusion": Workload(batch=1, peers={"captum": _captum(lambda m: __import__("captum.attr").attr.Occlusion(m),
                                                            sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8))},
                          forwards=WINDOWS + 1.0, how="one forward per 16 px window at stride 8 (729) + the pass"),
    "sscam": Workload(batch=1, options={"n": SS_N}, peers={"torchcam": _torchcam("SSCAM", num_samples=SS_N)},
                      forwards=SS_N * CHANNELS + 1.0, how=f"{SS_N} noisy masks per channel of layer4",
                      note=f"n = {SS_N} (default 35)"),
    "iscam": Workload(batch=1, options={"n": IS_N}, peers={"torchcam": _torchcam("ISCAM", num_samples=IS_N)},
                      forwards=IS_N * CHANNELS + 1.0, how=f"{IS_N} scaled masks per channel of layer4",
                      note=f"n = {IS_N} (default 10)"),
    "rise": Workload(batch=1, options={"n": RISE_N, "score": "sigmoid"}, peers={"TorchRay": _torchray_rise(RISE_N)},
                     forwards=float(RISE_N), how=f"{RISE_N} masked forwards", note=f"n = {RISE_N} (default 4000)"),
    "extremal": Workload(batch=1, options={"steps": EXTREMAL_STEPS},
                         peers={"TorchRay": _torchray_extremal(EXTREMAL_STEPS)}, forwards=0.0,
                         forward_backwards=float(EXTREMAL_STEPS), how=f"{EXTREMAL_STEPS} optimisation steps",
                         note=f"{EXTREMAL_STEPS} steps (default 800); TorchRay optimises 8 mask levels at once"),
    "attention": Workload(model="vit", how="one forward"),
    "rollout": Workload(model="vit", how="one forward"),
    "flow": Workload(model="vit", batch=2, how="one forward (+ max-flow per image, no model pass)"),
    "grad-rollout": Workload(model="vit", **GRAD),
    "chefer": Workload(model="vit", **GRAD),
    "attnlrp": Workload(model="vit", **GRAD),
    "legrad": Workload(model="vit", peers={"torchcam": _torchcam_legrad}, **GRAD),
    "5 CAMs": Workload(methods=("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"),
                       peers={"torchcam (4 of them)": _torchcam_four, "pytorch-grad-cam": _pgc_five}, **CAM),
    "gradcam, resnet50": Workload(model="resnet50", batch=8, methods=("gradcam",),
                                  peers={"torchcam": _torchcam("GradCAM"), "captum": _captum_layer_gradcam}, **CAM),
    "gradcam top-5": Workload(methods=("gradcam",), top=5, peers={"torchcam": _torchcam_top, "captum": _captum_top},
                              **CAM),
    "gradcam top-5, resnet50": Workload(model="resnet50", batch=8, methods=("gradcam",), top=5,
                                        peers={"torchcam": _torchcam_top, "captum": _captum_top}, **CAM),
    "ltpa": Workload(model="ltpa", how="one forward"),
    "own-attention": Workload(model="ltpa", how="one forward"),
    "sat": Workload(model="sat", how="one forward (teacher-forced on the greedy caption)"),
}
