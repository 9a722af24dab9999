"""Max differences between attnscope's newer methods and the reference libraries called directly, on the
models and inputs of their tests (tests/test_explain_attributions.py, _cams_extra.py, _masking.py,
_transformer_lrp.py). Prints one markdown row per comparison, with the reference's version.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/parity_new_methods.py
"""

from __future__ import annotations

import importlib.metadata as meta
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.simplefilter("ignore")

import attnscope as ats  # noqa: E402
from attnscope.maps import normalize  # noqa: E402


def version(dist: str) -> str:
    try:
        return meta.version(dist)
    except meta.PackageNotFoundError:
        return "not installed"


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).detach().abs().max() / ref.detach().abs().max())


def absolute(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).detach().abs().max())


def lrp_rows() -> list[tuple]:
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    import test_explain_attributions as t

    torch.manual_seed(0)
    model = t.randomise_batchnorm(ats.models.get("smallcnn", widths=[8, 16, 16]))
    x, y = t.x_and_targets()
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x), x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
    rows = []
    for name, make in (("epsilon-plus-flat", lambda: EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])),
                       ("epsilon-gamma-box", lambda: EpsilonGammaBox(lo, hi, canonizers=[SequentialMergeBatchNorm()])),
                       ("epsilon-alpha2-beta1", lambda: EpsilonAlpha2Beta1(canonizers=[SequentialMergeBatchNorm()]))):
        ours = ats.explain(model, x, "lrp", targets=y, options={"lrp": {"composite": name}})["lrp"].values
        rows.append((f"lrp {name}", "SmallCNN", "zennit", rel(ours, t.zennit_relevance(model, x, y, make())), "rel"))
    torch.manual_seed(0)
    resnet = t.randomise_batchnorm(ats.models.get("resnet18", num_classes=10))
    x, y = t.x_and_targets(2, 64)
    ours = ats.explain(resnet, x, "lrp", targets=y)["lrp"].values
    ref = t.zennit_relevance(resnet, x, y, EpsilonPlusFlat(canonizers=[ResNetCanonizer()]))
    rows.append(("lrp epsilon-plus-flat", "resnet18", "zennit", rel(ours, ref), "rel"))
    return [(*r[:3], version("zennit"), *r[3:]) for r in rows]


def captum_rows() -> list[tuple]:
    from captum.attr import DeepLift, DeepLiftShap

    import test_explain_attributions as t

    torch.manual_seed(0)
    import torch.nn as nn

    net = t.randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                              nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                              nn.Flatten(), nn.Linear(8, 4)))
    x, y = t.x_and_targets(3, 8)
    base = 0.3 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(5))
    ours = ats.explain(net, x, "deeplift", targets=y, options={"deeplift": {"baseline": base}})["deeplift"].values
    ref = DeepLift(net).attribute(x, base[None].expand_as(x), target=y).sum(1)
    refs = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    ours_s = ats.explain(net, x, "deepliftshap", targets=y, options={"deepliftshap": {"references": refs}})
    ref_s = DeepLiftShap(net).attribute(x, refs, target=y).sum(1)
    v = version("captum")
    return [("deeplift", "conv-BN-ReLU net", "captum", v, rel(ours, ref), "rel"),
            ("deepliftshap", "conv-BN-ReLU net", "captum", v, rel(ours_s["deepliftshap"].values, ref_s), "rel")]


def cam_rows() -> list[tuple]:
    import torchcam.methods as tc
    from pytorch_grad_cam import KPCA_CAM, FinerCAM, FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import test_explain_cams_extra as t

    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[8, 16, 16]).eval()
    import test_explain_attributions as ta

    ta.randomise_batchnorm(model)
    x, y = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 3])
    targets = [ClassifierOutputTarget(int(c)) for c in y]
    out = ats.explain(model, x, ["kpcacam", "fullgrad"], targets=y, layer=t.LAYER)
    kpca = t.pgc(KPCA_CAM, model, x, targets)
    with FullGrad(model=model, target_layers=[]) as cam:
        full = torch.from_numpy(cam(input_tensor=x, targets=targets))
    with FinerCAM(model, [model.get_submodule(t.LAYER)]) as cam:
        finer = torch.as_tensor(cam(x, None))
    finer_ours = ats.explain(model, x, "finercam", layer=t.LAYER)["finercam"].normalized()
    with torch.no_grad():
        with tc.ISCAM(model, t.LAYER, num_samples=3, input_shape=(3, 32, 32)) as ext:
            model(x)
            iscam = ext(class_idx=y.tolist())[0]
    ours_is = ats.explain(model, x, "iscam", targets=y, layer=t.LAYER,
                          options={"iscam": {"n": 3, "upsample_first": False}})["iscam"].lowres
    with tc.SmoothGradCAMpp(model, "features", num_samples=2, std=1e-9, input_shape=(3, 32, 32)) as ext:
        sg = ext(class_idx=y.tolist(), scores=model(x))[0]
    ours_sg = ats.explain(model, x, "smoothgradcam++", targets=y, layer="features",
                          options={"smoothgradcam++": {"n": 2, "sigma": 0.0}})["smoothgradcam++"].lowres
    pgc_v, tc_v = version("grad-cam"), version("torchcam")
    return [("kpcacam", "SmallCNN", "pytorch-grad-cam", pgc_v, absolute(out["kpcacam"].normalized(), kpca), "norm"),
            ("fullgrad", "SmallCNN", "pytorch-grad-cam", pgc_v, absolute(out["fullgrad"].normalized(), full), "norm"),
            ("finercam", "SmallCNN", "pytorch-grad-cam", pgc_v, absolute(finer_ours, finer), "norm"),
            ("iscam", "SmallCNN", "torchcam", tc_v, absolute(normalize(ours_is), normalize(iscam)), "norm"),
            ("smoothgradcam++ (σ → 0)", "SmallCNN", "torchcam", tc_v,
             absolute(normalize(ours_sg), normalize(sg.detach())), "norm")]


def transformer_rows() -> list[tuple]:
    from torchcam.methods import LeGrad
    from torchray.attribution.rise import rise

    import test_explain_transformer_lrp as t

    model = t.torchvision_vit(3)
    ours = ats.explain(model, t.X, "legrad", targets=t.T, options={"legrad": {"pool": "mean"}})["legrad"].lowres
    with LeGrad(model, list(model.encoder.layers)) as extractor:
        ref = extractor(t.T.tolist(), model(t.X))[0]
    torch.manual_seed(0)
    cnn = ats.models.get("smallcnn", widths=[8, 16, 16]).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    r_ours = ats.explain(cnn, x, "rise", targets=t.T,
                         options={"rise": {"n": 96, "score": "sigmoid", "batch_size": 32}})["rise"].values
    r_ref = rise(cnn, x, seed=0, num_masks=96, num_cells=7, batch_size=32)[torch.arange(2), t.T] / 0.5
    return [("legrad (pool=mean)", "torchvision ViT", "torchcam", version("torchcam"),
             absolute(normalize(ours), ref), "norm"),
            ("rise (score=sigmoid)", "SmallCNN", "TorchRay", version("torchray"), rel(r_ours, r_ref), "rel")]


def main() -> None:
    torch.set_num_threads(1)
    print("| method | model | reference | version | max difference | of |\n| --- | --- | --- | --- | ---: | --- |")
    for part in (lrp_rows, captum_rows, cam_rows, transformer_rows):
        for method, model, ref, ver, diff, kind in part():
            what = "raw maps, relative to the largest value" if kind == "rel" else "normalised maps"
            print(f"| {method} | {model} | {ref} | {ver} | {diff:.1e} | {what} |")


if __name__ == "__main__":
    main()
