"""Every family of issue 28 (tests/families.py): the auto layer, which transformer methods apply, and the maps
against an independent reference — pytorch-grad-cam with its documented reshape (or autograd by hand for
detectors and segmenters), the model's own weights (Hugging Face `output_attentions`, the model's output left
unchanged by the interception), the pure rollout functions from the readout the head's structure gives,
LeGrad's last layer from the attention gradient, and AttnLRP's conservation (CP-LRP, bias-free copies)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.errors import NotApplicableError
from attnscope.explain import RegionScore
from attnscope.explain import transformer as tf
from attnscope.explain.attention import explicit_attention
from attnscope.explain.layers import auto_layer
from attnscope.explain.rewrites import rewritten
from families import ATTENTION_METHODS, FAMILIES

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")

_BUILT: dict[str, nn.Module] = {}


def model_of(name: str) -> nn.Module:
    if name not in _BUILT:
        _BUILT[name] = FAMILIES[name].build()
    return _BUILT[name]


def images(name: str, n: int = 2) -> torch.Tensor:
    size = FAMILIES[name].size
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def target_of(name: str):
    fam = FAMILIES[name]
    if fam.kind == "segmenter":
        size = fam.size // (4 if name == "hf-segformer" else 1)
        mask = torch.zeros(size, size, dtype=torch.bool)
        mask[size // 4 : size // 2, size // 4 : size // 2] = True
        return RegionScore(1, mask)
    if name == "hf-detr":
        return lambda logits: logits[:, 0, 1]
    if fam.kind == "detector":
        return lambda detections: torch.stack([d["scores"].sum() if d["scores"].numel() else d["boxes"].sum() * 0
                                               for d in detections])
    if fam.kind == "tower":
        return lambda embeddings: embeddings[:, 3]
    return torch.tensor([1, 3])


def grid_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int, int]]:
    """name → (runs, grid area, channels) of every module whose output is a grid of the image (h·w > 1)."""
    from attnscope.explain.layers import _grid_tokens, _is_spatial, fitting_layouts

    seen: dict[str, list] = {}

    def hook(name):
        def record(_m, _i, out):
            if not isinstance(out, torch.Tensor) or out.shape[0] != 1:
                return
            if out.dim() == 4 and _is_spatial(tuple(out.shape), x.shape[-2:]):
                layout = (fitting_layouts(tuple(out.shape), x.shape[-2:]) or ["nchw"])[0]
                area = out.shape[2] * out.shape[3] if layout == "nchw" else out.shape[1] * out.shape[2]
                if area < 2:  # a squeeze-excitation's (B, C, 1, 1)
                    return
                entry = (area, out.shape[1])
            elif out.dim() == 3 and _grid_tokens(model, out.shape[1], x.shape[-2:]):
                entry = (_grid_tokens(model, out.shape[1], x.shape[-2:]), out.shape[2])
            else:
                return
            seen.setdefault(name, []).append(entry)
        return record

    from attnscope.explain.attention import attention_modules

    inside = [n + "." for n, _ in attention_modules(model)]  # an attention's bias tables are no blocks
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if n and not any(n.startswith(p) for p in inside)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return {n: (len(v), v[0][0], v[0][1]) for n, v in seen.items()}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_auto_layer_is_the_last_stage_never_a_head_a_stem_or_after_pooling(name: str) -> None:
    model, x = model_of(name), images(name)
    layer, why = auto_layer(model, x)
    assert layer == FAMILIES[name].layer, why
    outputs = grid_outputs(model, x)
    runs, area, channels = outputs[layer]
    assert runs == 1
    once = {n: o for n, o in outputs.items() if o[0] == 1}
    assert area == min(o[1] for o in once.values())  # the coarsest grid: the last stage, not a stem
    assert layer != next(iter(outputs))  # not the first module with a grid output (a stem)
    if FAMILIES[name].kind == "segmenter":
        with torch.no_grad():
            out = model(x[:1])
        classes = _tensor(out).shape[1]
        assert channels != classes  # not the segmentation head


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_transformer_method_runs_where_it_applies_and_refuses_with_a_reason_elsewhere(name: str) -> None:
    fam, model, x = FAMILIES[name], model_of(name), images(name)
    for method in ATTENTION_METHODS:
        if method in fam.methods:
            out = ats.explain(model, x, method, targets=target_of(name), output=fam.output)[method]
            assert torch.isfinite(out.values).all() and float(out.values.std()) > 0, method
        else:
            with pytest.raises(NotApplicableError) as refusal:
                ats.explain(model, x, method, targets=target_of(name), output=fam.output)
            message = str(refusal.value)
            assert "apply" in message and any(m in message for m in (*fam.methods, "gradcam")), message
    assert not any("forward" in m.__dict__ for m in model.modules())  # every interception undone


ATTENTION_FAMILIES = [n for n, f in FAMILIES.items() if f.methods and n != "hf-detr"]


@pytest.mark.parametrize("name", ATTENTION_FAMILIES)
def test_the_interception_leaves_the_models_output_unchanged(name: str) -> None:
    """The explicit attention computes what the model's own path (SDPA, fused MHA, eager) computes."""
    model, x = model_of(name), images(name)
    with torch.no_grad():
        plain = _tensor(model(x))
        with explicit_attention(model) as layers:
            seen = []
            handles = [a.probe.register_forward_hook(lambda _m, _i, o: seen.append(o)) for a in layers]
            read = _tensor(model(x))
            for h in handles:
                h.remove()
    torch.testing.assert_close(read, plain, rtol=1e-4, atol=1e-5)
    assert seen and all(torch.allclose(a.sum(-1), torch.ones(())) for a in seen)  # rows of weights sum to 1


def _tensor(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "image_embeds", "out"):
        found = out.get(key) if isinstance(out, dict) else getattr(out, key, None)
        if isinstance(found, torch.Tensor):
            return found
    raise AssertionError(type(out))


# The tokens each head reads, by the head's code: (extra tokens, which of them are read, whether the patches are).
READOUT = {"hf-vit": (1, [0], False), "hf-deit": (2, [0], False),  # DeiTForImageClassification reads CLS only
           "hf-beit": (1, [], True),
           "hf-dinov2-registers": (3, [0], True), "hf-clip-vision": (1, [0], False),
           "hf-clip-image-features": (1, [0], False), "open_clip": (1, [0], False),
           "timm-vit-registers": (5, [0], False), "timm-eva02": (1, [], True), "torchvision-vit": (1, [0], False)}


@pytest.mark.parametrize("name", list(READOUT))
def test_vit_family_maps_equal_the_pure_functions_from_the_heads_readout(name: str) -> None:
    fam, model, x = FAMILIES[name], model_of(name), images(name)
    methods = ["attention", "rollout", "grad-rollout", "flow", "legrad"]
    out = ats.explain(model, x, methods, targets=target_of(name), output=fam.output)
    with explicit_attention(model) as layers:
        seen = []
        handles = [a.probe.register_forward_hook(lambda _m, _i, o: seen.append(o) or o.retain_grad())
                   for a in layers]
        score = target_of(name)
        y = _tensor(model(x))
        (y[torch.arange(2), score] if isinstance(score, torch.Tensor) else score(y)).sum().backward()
        for h in handles:
            h.remove()
    prefix, read, patches = READOUT[name]
    t = seen[0].shape[-1]
    u = torch.zeros(t)
    u[read] = 1.0
    if patches:
        u[prefix:] = 1.0
    u = (u / u.sum()).expand(2, t)
    side = int((t - prefix) ** 0.5)
    grid = lambda r: r[:, prefix:].reshape(2, side, side)  # noqa: E731
    a = [s.detach() for s in seen]
    expect = {
        "attention": grid(torch.einsum("bi,bij->bj", u, a[-1].mean(1))),
        "rollout": grid(torch.einsum("bi,bij->bj", u, tf.rollout(a))),
        "grad-rollout": grid(torch.einsum("bi,bij->bj", u, tf.grad_rollout(a, [s.grad for s in seen]))),
        "legrad": None,
    }
    for method, ref in expect.items():
        if ref is not None:
            torch.testing.assert_close(out[method].lowres, ref, rtol=1e-4, atol=1e-6)
    with rewritten(model, "attnlrp") as applied:  # chefer: R_A = A ⊙ ∂y/∂A under AttnLRP's rules / y
        ((_, lrp_layers),) = applied
        lrp = []
        handles = [a.probe.register_forward_hook(lambda _m, _i, o: lrp.append(o) or o.retain_grad())
                   for a in lrp_layers]
        y = _tensor(model(x))
        y = y[torch.arange(2), score] if isinstance(score, torch.Tensor) else score(y)
        y.sum().backward()
        for h in handles:
            h.remove()
    relevance = [r.detach() * r.grad / y.detach().view(-1, 1, 1, 1) for r in lrp]
    chefer = grid(torch.einsum("bi,bij->bj", u, tf.grad_rollout(relevance, [s.grad for s in seen])))
    torch.testing.assert_close(ats.explain(model, x, "chefer", targets=score, output=fam.output)["chefer"].lowres,
                               chefer, rtol=1e-4, atol=1e-6)
    last = ats.explain(model, x, "legrad", targets=target_of(name), output=fam.output,
                       options={"legrad": {"last": 1}})["legrad"].lowres
    torch.testing.assert_close(last, grid(seen[-1].grad.clamp_min(0).mean(dim=(1, 2))), rtol=1e-4, atol=1e-9)
    if read == [0] and not patches:  # flow into the CLS token, as Abnar & Zuidema
        torch.testing.assert_close(out["flow"].lowres, grid(tf.attention_flow(a, sink=0)), rtol=1e-4, atol=1e-5)


class _Output(nn.Module):
    """The model with its output as one tensor, for pytorch-grad-cam (Hugging Face ModelOutput, torchvision dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _tensor(self.model(x))


def pgc_reshape(model: nn.Module, layer: nn.Module, x: torch.Tensor):
    """pytorch-grad-cam's documented reshape_transform for the layer's output: tokens → drop the extra tokens and
    reshape the patches to (B, C, h, w) (its ViT / Swin tutorials), channels-last → permute; else none."""
    from attnscope.explain.layers import _grid_tokens, fitting_layouts

    with torch.no_grad():
        seen = []
        handle = layer.register_forward_hook(lambda _m, _i, o: seen.append(o))
        model(x[:1])
        handle.remove()
    out = seen[0]
    if out.dim() == 3:
        grid = _grid_tokens(model, out.shape[1], x.shape[-2:])
        side, prefix = int(grid ** 0.5), out.shape[1] - grid
        return lambda t: t[:, prefix:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)
    if fitting_layouts(tuple(out.shape), x.shape[-2:]) == ["nhwc"]:
        return lambda t: t.permute(0, 3, 1, 2)
    return None


def reference_gradcam(name: str, model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Signed Grad-CAM Σ_k mean_ij(∂y/∂A_k) A_k: pytorch-grad-cam's `get_cam_image` for classifiers, towers and
    segmenters (ClassifierOutputTarget, SemanticSegmentationTarget); autograd by hand for detectors."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget

    fam, module = FAMILIES[name], model.get_submodule(layer)
    if fam.kind == "detector":
        store = []
        handle = module.register_forward_hook(lambda _m, _i, o: store.append(o) or o.clone())
        out = model(x.clone().requires_grad_())
        handle.remove()
        y = target_of(name)(out.logits if name == "hf-detr" else out)
        (g,) = torch.autograd.grad(y.sum(), store[0])
        return (g.mean(dim=(2, 3), keepdim=True) * store[0]).sum(1).detach()
    reshape = pgc_reshape(model, module, x)
    if fam.kind == "segmenter":
        region = target_of(name)
        targets = [SemanticSegmentationTarget(int(region.label), region.mask.float().numpy()) for _ in range(len(x))]
    else:
        classes = target_of(name)
        targets = [ClassifierOutputTarget(int(c)) for c in (classes if isinstance(classes, torch.Tensor) else [3, 3])]
    with GradCAM(model=_Output(model), target_layers=[module], reshape_transform=reshape) as cam:
        outputs = cam.activations_and_grads(x)
        sum(t(o) for t, o in zip(targets, outputs, strict=True)).backward()
        acts = cam.activations_and_grads.activations[0].cpu().numpy()
        grads = cam.activations_and_grads.gradients[0].cpu().numpy()
        return torch.from_numpy(cam.get_cam_image(x, module, targets, acts, grads, False)).float()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_gradcam_at_the_auto_layer_equals_pytorch_grad_cam(name: str) -> None:
    fam, model, x = FAMILIES[name], model_of(name), images(name)
    out = ats.explain(model, x, "gradcam", targets=target_of(name), output=fam.output,
                      options={"gradcam": {"relu": False}})["gradcam"]
    assert out.layer == fam.layer and out.meta["layer_choice"]
    ref = reference_gradcam(name, model, fam.layer, x)
    assert float(ref.abs().max()) > 0
    assert float((out.lowres - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def bias_free(model: nn.Module) -> nn.Module:
    """The model with no additive constant anywhere: biases, position embeddings, CLS / register tokens, bias
    tables and BatchNorm running means at zero (the weights of linear, convolution and norm layers kept)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            last = name.rsplit(".", 1)[-1]
            if "bias" in last or any(k in name for k in ("pos_embed", "positional_embedding", "position_embedding",
                                                          "cls_token", "class_token", "class_embedding", "reg_token",
                                                          "register_tokens", "distillation_token")):
                p.zero_()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
    return model


@pytest.mark.parametrize("name", ["hf-vit", "hf-deit", "hf-beit", "hf-dinov2-registers", "hf-clip-vision",
                                  "open_clip", "timm-vit-registers", "torchvision-vit", "torchvision-swin",
                                  "timm-swin", "hf-swin", "hf-swin-v2", "timm-levit", "timm-mobilevit",
                                  "hf-segformer"])
def test_cp_lrp_conserves_the_score_on_a_bias_free_copy(name: str) -> None:
    """With no additive constants, CP-LRP's rules (identity on norms and activations, A constant, LRP-0 on linear
    maps) are exactly conservative: the input relevance sums to the explained score — on every implementation."""
    fam, model = FAMILIES[name], bias_free(FAMILIES[name].build())
    x = images(name)
    out = ats.explain(model, x, "attnlrp", targets=target_of(name), output=fam.output,
                      options={"attnlrp": {"attention": "cp"}})
    score = target_of(name)
    y = _tensor(model(x)).detach()
    y = y[torch.arange(2), score] if isinstance(score, torch.Tensor) else score(y)
    assert float(y.abs().min()) > 0
    torch.testing.assert_close(out["attnlrp"].values.sum(dim=(1, 2)), y, rtol=1e-4, atol=1e-6)


def test_a_clip_called_as_get_image_features_reads_its_image_tower_only() -> None:
    """The text tower's attention never runs; only the layers that ran are read (and refused nowhere)."""
    model, x = model_of("hf-clip-image-features"), images("hf-clip-image-features")
    from attnscope.explain.context import shared_pass

    shared = shared_pass(model, x, target_of("hf-clip-image-features"), frozenset({"attention"}), None)
    names = shared.capture.probe_names
    assert names == ("clip.vision_model.encoder.layers.0.self_attn", "clip.vision_model.encoder.layers.1.self_attn")


def test_the_manifest_says_which_layer_was_chosen_and_why(tmp_path) -> None:
    """`attnscope explain` writes the layer and the rule that chose it (one line) beside each layer method."""
    import json

    from click.testing import CliRunner

    from attnscope.cli import cli
    from attnscope.models import checkpoint

    torch.manual_seed(0)
    path = checkpoint.save(ats.models.get("swin", depths=[1, 1], heads=[1, 2], dim=16, window=2, image_size=32),
                           tmp_path / "swin.safetensors")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", "--checkpoint", str(path), "--images", "clutter", "--n", "2",
                                      "--methods", "gradcam,rollout", "--resize", "shorter=32", "--out", str(out),
                                      "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    methods = json.loads((out / "manifest.json").read_text())["methods"]
    assert methods["gradcam"]["layer"] == "norm"
    assert methods["gradcam"]["layer_choice"] == "the last spatial block before global pooling"
    assert methods["rollout"]["layer_choice"] is None and "layer_choice" not in methods["gradcam"]["options"]


def test_timm_fused_and_unfused_attention_give_the_same_maps() -> None:
    """timm's two paths — F.scaled_dot_product_attention and softmax(q kᵀ) v — are both intercepted."""
    model, x = FAMILIES["timm-vit-registers"].build(), images("timm-vit-registers")
    methods = ["rollout", "grad-rollout", "chefer", "attnlrp", "legrad"]
    fused = ats.explain(model, x, methods, targets=torch.tensor([1, 3]))
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    plain = ats.explain(model, x, methods, targets=torch.tensor([1, 3]))
    for method in methods:
        torch.testing.assert_close(plain[method].values, fused[method].values, rtol=1e-4, atol=1e-6)


def test_the_table_in_docs_models_is_the_one_these_tests_pin() -> None:
    """docs/models.md's family table: per row, the auto layer and the ✓ cells are FAMILIES' (each checked above),
    every other cell a refusal; every family has a row."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in FAMILIES:
            rows[cells[0]] = cells[1:]
    assert set(rows) == set(FAMILIES)
    for name, cells in rows.items():
        assert cells[0] == f"`{FAMILIES[name].layer}`", name
        ticked = tuple(m for m, cell in zip(ATTENTION_METHODS, cells[1:], strict=True) if cell == "✓")
        assert ticked == FAMILIES[name].methods, name
        assert all(cell == "✓" or cell.startswith("– (") for cell in cells[1:]), name
