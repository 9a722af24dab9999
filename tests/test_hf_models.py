"""Hugging Face vision models built from configs (random weights, nothing downloaded): maps checked, not just run."""

from __future__ import annotations

import pytest
import torch

import attnscope as ats

T = pytest.importorskip("transformers")  # the dev extra
timm = pytest.importorskip("timm")

TINY_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, layer_norm_eps=1e-6)


def build(kind: str) -> torch.nn.Module:
    config, model = {"vit": ("ViTConfig", "ViTForImageClassification"),
                     "deit": ("DeiTConfig", "DeiTForImageClassification"),
                     "swin": ("SwinConfig", "SwinForImageClassification"),
                     "convnext": ("ConvNextConfig", "ConvNextForImageClassification"),
                     "dinov2": ("Dinov2Config", "Dinov2ForImageClassification")}[kind]
    options = {"swin": dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2),
               "convnext": dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)}.get(kind, TINY_VIT)
    torch.manual_seed(0)
    return getattr(T, model)(getattr(T, config)(num_labels=5, **options)).eval()


# kind: (the layer "auto" picks, how its output is laid out, extra tokens before the patches)
EXPECTED = {
    "vit": ("vit.layers.1.layernorm_before", "tokens", 1),
    "deit": ("deit.layers.1.layernorm_before", "tokens", 2),  # CLS and distillation tokens
    "swin": ("swin.layernorm", "tokens", 0),  # mean-pooled: the last token block, not the last attention's input
    "convnext": ("convnext.encoder.stages.1", "nchw", 0),
    "dinov2": ("dinov2.layernorm", "tokens", 1),  # its head reads CLS and the mean of the patches
}


def reference_gradcam(model, x, layer, layout, prefix, target) -> torch.Tensor:
    """Signed Grad-CAM Σ_k mean_ij(∂y/∂A_k) A_k at `layer`, from the model's `.logits`, by hand."""
    store = []  # the layer's output; a clone goes on (DenseNet's in-place ReLU after it cannot change it)
    keep = lambda _m, _i, out: store.append(out) or out.clone()
    handle = dict(model.named_modules())[layer].register_forward_hook(keep)
    try:
        logits = model(x).logits
    finally:
        handle.remove()
    (a,) = store
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    if layout == "tokens":
        side = int((a.shape[1] - prefix) ** 0.5)
        a, g = (t[:, prefix:].transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side) for t in (a, g))
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(1).detach()


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_gradcam_on_hf_models_is_the_formula_at_the_chosen_layer(kind: str) -> None:
    model = build(kind)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 4])
    out = ats.explain(model, x, "gradcam", targets=target, options={"gradcam": {"relu": False}})
    layer, layout, prefix = EXPECTED[kind]
    assert out["gradcam"].layer == layer
    ref = reference_gradcam(model, x, layer, layout, prefix, target)
    assert ref.std() > 0
    torch.testing.assert_close(out["gradcam"].lowres, ref, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(x).logits)  # the ModelOutput's .logits were read


def vit_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """An HF ViT and a timm ViT holding the same weights (q, k, v stacked into timm's qkv)."""
    hf = build("vit")
    tm = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, patch_size=8,
                           embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0).eval()
    h = hf.state_dict()
    state = {"cls_token": h["vit.embeddings.cls_token"], "pos_embed": h["vit.embeddings.position_embeddings"],
             "patch_embed.proj.weight": h["vit.embeddings.patch_embeddings.projection.weight"],
             "patch_embed.proj.bias": h["vit.embeddings.patch_embeddings.projection.bias"],
             "norm.weight": h["vit.layernorm.weight"], "norm.bias": h["vit.layernorm.bias"],
             "head.weight": h["classifier.weight"], "head.bias": h["classifier.bias"]}
    for i in range(2):
        p = f"vit.layers.{i}."
        for part in ("weight", "bias"):
            state[f"blocks.{i}.attn.qkv.{part}"] = torch.cat([h[f"{p}attention.{q}_proj.{part}"] for q in "qkv"])
            state[f"blocks.{i}.attn.proj.{part}"] = h[f"{p}attention.o_proj.{part}"]
            state[f"blocks.{i}.norm1.{part}"] = h[f"{p}layernorm_before.{part}"]
            state[f"blocks.{i}.norm2.{part}"] = h[f"{p}layernorm_after.{part}"]
            state[f"blocks.{i}.mlp.fc1.{part}"] = h[f"{p}mlp.fc1.{part}"]
            state[f"blocks.{i}.mlp.fc2.{part}"] = h[f"{p}mlp.fc2.{part}"]
    tm.load_state_dict(state)
    return hf, tm


def test_hf_vit_maps_equal_timm_vit_maps_with_the_same_weights() -> None:
    """Every transformer method and Grad-CAM: the same maps from Hugging Face's and timm's ViT (acceptance of
    issue 28 for chefer, attnlrp and legrad: ≤ 1e-5 of the map's scale)."""
    hf, tm = vit_pair()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    methods = ("rollout", "attention", "grad-rollout", "flow", "gradcam", "chefer", "attnlrp", "legrad")
    a = ats.explain(hf, x, methods, targets=torch.tensor([1, 2, 3]))
    b = ats.explain(tm, x, methods, targets=torch.tensor([1, 2, 3]))
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    for name in methods:
        scale = float(b[name].values.abs().max())
        assert scale > 0, name
        assert float((a[name].values - b[name].values).abs().max()) <= 1e-5 * scale, name
    assert b["gradcam"].layer == "blocks.1.norm1" and a["gradcam"].layer == "vit.layers.1.layernorm_before"


def test_the_eager_path_is_forced_for_the_call_only() -> None:
    model = build("vit")
    assert model.config._attn_implementation == "sdpa"
    ats.explain(model, torch.rand(1, 3, 32, 32), "rollout")
    assert model.config._attn_implementation == "sdpa"
    swin = build("swin")
    handle = swin.swin.encoder.layers[1].register_forward_hook(lambda *_: (_ for _ in ()).throw(KeyError("boom")))
    with pytest.raises(KeyError, match="boom"):
        ats.explain(swin, torch.rand(1, 3, 32, 32), "rollout")
    handle.remove()
    assert swin.config._attn_implementation == "sdpa"  # restored on error too
    assert not any("forward" in m.__dict__ for m in swin.modules())
