"""attention, rollout, grad-rollout and flow through `explain()`, and the CAM family on ViT tokens.

The weights and gradients `explain` reads are checked against a manual explicit forward and
autograd; maps against the pure functions of `transformer.py`; Grad-CAM on tokens against
pytorch-grad-cam with a hand-written reshape; the model against itself before and after.
"""

import warnings

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope import models
from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import transformer as tf
from attnscope.explain.attention import explicit_attention
from attnscope.maps import upsample

TRANSFORMER = ["attention", "rollout", "grad-rollout", "flow"]


def tiny_vit(**cfg) -> nn.Module:
    torch.manual_seed(0)
    model = models.get("vit", **{"image_size": 16, "patch_size": 4, "dim": 16, "depth": 3, "heads": 2, **cfg})
    with torch.no_grad():  # larger position and query weights than the init, so attention is far from uniform
        model.pos_embed.normal_(std=1.0)
        for block in model.blocks:
            block.attn.qkv.weight.normal_(std=0.5)
    return model.eval()


class Rewired(nn.Module):
    """TinyViT whose blocks run in the order `order(blocks)` gives (e.g. reversed, or one block twice)."""

    def __init__(self, vit: nn.Module, order) -> None:
        super().__init__()
        self.vit, self.order, self.num_prefix_tokens, self.cls_token = vit, order, 1, vit.cls_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        tokens = torch.cat([v.cls_token.expand(len(x), -1, -1), v.patch_embed(x).flatten(2).transpose(1, 2)], 1)
        tokens = tokens + v.pos_embed
        for block in self.order(list(v.blocks)):
            tokens = block(tokens)
        return v.head(v.norm(tokens)[:, 0])


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def manual_pass(model: nn.Module, x: torch.Tensor, target: torch.Tensor):
    """Logits, attention weights and ∂y/∂A of an explicit forward, read with plain hooks and autograd."""
    attns: list[torch.Tensor] = []
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    handles = [b.attn.softmax.register_forward_hook(lambda _m, _i, out: attns.append(out)) for b in model.blocks]
    try:
        logits = model(x)
        grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), attns)
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = True
    return logits.detach(), [a.detach() for a in attns], [g.detach() for g in grads]


def test_maps_equal_the_pure_functions_on_manually_captured_attention():
    model, x, target = tiny_vit(registers=1), images(), torch.tensor([0, 3, 7])
    _, attns, grads = manual_pass(model, x, target)
    maps = ats.explain(model, x, TRANSFORMER, targets=target, options={"rollout": {"discard_ratio": 0.2}})
    prefix = 2  # CLS + 1 register; the grid is 4 × 4

    def grid(scores: torch.Tensor) -> torch.Tensor:
        return scores[:, prefix:].reshape(-1, 4, 4)

    expected = {
        "attention": grid(attns[-1].mean(1)[:, 0]),
        "rollout": grid(tf.rollout(attns, discard_ratio=0.2)[:, 0]),
        "grad-rollout": grid(tf.grad_rollout(attns, grads)[:, 0]),
        "flow": grid(tf.attention_flow(attns)),
    }
    for name, lowres in expected.items():
        torch.testing.assert_close(maps[name].lowres, lowres, msg=name)
        torch.testing.assert_close(maps[name].values, upsample(lowres, (16, 16)), msg=name)
        assert torch.equal(maps[name].targets, target)


def test_gradients_are_matched_to_their_layers_in_forward_order():
    vit = tiny_vit()
    model, x, target = Rewired(vit, lambda blocks: list(reversed(blocks))).eval(), images(2), torch.tensor([1, 2])
    attns, grads = [], []
    for m in vit.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    handles = [b.attn.softmax.register_forward_hook(lambda _m, _i, out: attns.append(out)) for b in vit.blocks]
    logits = model(x)
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), attns)
    for h in handles:
        h.remove()
    for m in vit.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    maps = ats.explain(model, x, ["grad-rollout", "rollout"], targets=target)
    expected = tf.grad_rollout([a.detach() for a in attns], grads)[:, 0, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(maps["grad-rollout"].lowres, expected)
    in_module_order = tf.grad_rollout([a.detach() for a in attns][::-1], grads[::-1])[:, 0, 1:].reshape(2, 4, 4)
    assert not torch.allclose(maps["grad-rollout"].lowres, in_module_order)


def test_fused_and_explicit_paths_give_the_same_logits_and_maps():
    fused, explicit, x = tiny_vit(), tiny_vit(), images()
    for m in explicit.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    torch.testing.assert_close(fused(x), explicit(x), atol=1e-5, rtol=1e-5)
    methods = [*TRANSFORMER, "gradcam", "saliency"]
    a, b = ats.explain(fused, x, methods), ats.explain(explicit, x, methods)
    for name in methods:
        torch.testing.assert_close(a[name].values, b[name].values, atol=1e-5, rtol=1e-4, msg=name)
    assert all(m.fused_attn for m in fused.modules() if hasattr(m, "fused_attn"))  # restored
    assert not any(m.fused_attn for m in explicit.modules() if hasattr(m, "fused_attn"))  # left as found


def test_batched_equals_one_by_one_and_the_model_is_left_as_found():
    model, x = tiny_vit().train(), images(4)
    model.head.weight.grad = torch.ones_like(model.head.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batched = ats.explain(model, x, TRANSFORMER, targets=torch.tensor([0, 1, 2, 3]))
    for i in range(4):
        single = ats.explain(model, x[i : i + 1], TRANSFORMER, targets=torch.tensor([i]))
        for name in TRANSFORMER:
            torch.testing.assert_close(batched[name].values[i : i + 1], single[name].values, msg=name)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model.head.weight.grad, torch.ones_like(model.head.weight))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_grad_rollout_is_class_specific_and_rollout_is_not():
    model, x = tiny_vit(), images(2)
    a = ats.explain(model, x, ["rollout", "grad-rollout"], targets=0)
    b = ats.explain(model, x, ["rollout", "grad-rollout"], targets=5)
    assert torch.equal(a["rollout"].values, b["rollout"].values)
    assert not torch.allclose(a["grad-rollout"].values, b["grad-rollout"].values)


def test_gradcam_on_tokens_matches_pytorch_grad_cam_with_a_reshape():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, target = tiny_vit(registers=2), images(), torch.tensor([0, 3, 7])
    mine = ats.explain(model, x, "gradcam", targets=target)["gradcam"]
    assert mine.layer == "blocks.2.norm1" and mine.lowres.shape == (3, 4, 4)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:  # (B, 3 + 16, D) → (B, D, 4, 4)
        return tokens[:, 3:].transpose(1, 2).reshape(tokens.shape[0], -1, 4, 4)

    with warnings.catch_warnings(), GradCAM(model, [model.blocks[2].norm1], reshape_transform=reshape) as cam:
        warnings.simplefilter("ignore")
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target]))
    assert (mine.normalized() - theirs).abs().max() <= 1e-4


def test_ablation_cam_on_tokens_keeps_the_extra_tokens():
    model, x = tiny_vit(registers=1), images(1)
    acts: list[torch.Tensor] = []
    handle = model.blocks[2].norm1.register_forward_hook(lambda _m, _i, out: acts.append(out))
    with torch.no_grad():
        y = model(x)[0, 4]
    handle.remove()
    tokens = acts[0][0]  # (T, D)
    weights = []
    for k in range(tokens.shape[1]):  # zero patch channel k, keep CLS and register
        ablated = tokens.clone()
        ablated[2:, k] = 0
        handle = model.blocks[2].norm1.register_forward_hook(lambda _m, _i, _o, a=ablated: a[None])
        with torch.no_grad():
            weights.append((y - model(x)[0, 4]) / y)
        handle.remove()
    patches = tokens[2:].T.reshape(-1, 4, 4)  # (D, 4, 4)
    expected = (torch.stack(weights)[:, None, None] * patches).sum(0).clamp_min(0)
    mine = ats.explain(model, x, "ablationcam", targets=4)["ablationcam"]
    torch.testing.assert_close(mine.lowres[0], expected, atol=1e-5, rtol=1e-4)


def test_methods_that_do_not_apply_and_bad_token_counts_raise_and_restore():
    with pytest.raises(NotApplicableError, match="no attention layers.*Methods that do: .*gradcam"):
        ats.explain(models.get("smallcnn", widths=[4, 8]), images(1), "rollout")

    class Undeclared(nn.Module):
        """20 tokens (4×4 + 4 extra) from an nn.MultiheadAttention; the model declares no extra tokens."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.extra = nn.Parameter(torch.randn(1, 4, 8))
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            t = torch.cat([self.extra.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], 1)
            return self.head(self.attn(t, t, t, need_weights=False)[0].mean(1))

    model = Undeclared()
    with pytest.raises(InputError, match="20 tokens are not a patch grid.*num_prefix_tokens"):
        ats.explain(model, images(1), "rollout")
    assert "forward" not in model.attn.__dict__
    model.num_prefix_tokens = 4  # no CLS: the head reads the mean of all 20 tokens, so rollout starts from it
    x = images(1)
    out = ats.explain(model, x, ["rollout", "attention"])
    with explicit_attention(model) as layers:
        seen = []
        handle = layers[0].probe.register_forward_hook(lambda _m, _i, o: seen.append(o))
        model(x)
        handle.remove()
    uniform = torch.full((1, 20), 1 / 20)
    torch.testing.assert_close(out["rollout"].lowres, (uniform[:, None] @ tf.rollout(seen))[:, 0, 4:].view(1, 4, 4))
    torch.testing.assert_close(out["attention"].lowres, (uniform[:, None] @ seen[0].mean(1))[:, 0, 4:].view(1, 4, 4))


def test_failing_forward_restores_the_attention_mode():
    model = tiny_vit()
    with pytest.raises(InputError, match=r"\(B, C, 16, 16\)"):
        ats.explain(model, torch.rand(1, 3, 8, 8), ["rollout", "grad-rollout"])
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


def test_options_are_checked():
    model, x = tiny_vit(), images(1)
    with pytest.raises(InputError, match="head_fusion"):
        ats.explain(model, x, "rollout", options={"rollout": {"head_fusion": "median"}})
    with pytest.raises(InputError, match="layer_index"):
        ats.explain(model, x, "attention", options={"attention": {"layer_index": 3}})
    with pytest.raises(InputError, match="max_edges"):
        ats.explain(model, x, "flow", options={"flow": {"max_edges": 100}})
    options = {"attention": {"layer_index": 0, "head_fusion": "max"}}
    maps = ats.explain(model, x, ["attention", "rollout"], options=options)
    assert maps["attention"].meta == {"head_fusion": "max", "layer_index": 0}


def test_torchvision_attention_equals_multihead_attentions_own_weights():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vision_transformer.VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    ).eval()
    x = images(2)
    inputs: list[torch.Tensor] = []
    layers = [layer.self_attention for layer in model.encoder.layers]
    handles = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for m in layers]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for i, (mha, q) in enumerate(zip(layers, inputs, strict=True)):
        with torch.no_grad():
            weights = mha(q, q, q, need_weights=True, average_attn_weights=False)[1]  # (B, h, 17, 17)
        mine = ats.explain(model, x, "attention", options={"attention": {"layer_index": i}})["attention"]
        torch.testing.assert_close(mine.lowres, weights.mean(1)[:, 0, 1:].reshape(2, 4, 4))


def test_timm_grad_rollout_equals_a_manual_explicit_pass():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=16, patch_size=4,
                              depth=2, embed_dim=16, num_heads=2, reg_tokens=2).eval()
    x, target = images(2), torch.tensor([1, 4])
    attns: list[torch.Tensor] = []
    for block in model.blocks:
        block.attn.fused_attn = False
    handles = [b.attn.attn_drop.register_forward_hook(lambda _m, _i, out: attns.append(out)) for b in model.blocks]
    logits = model(x)
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), attns)
    for h in handles:
        h.remove()
    for block in model.blocks:
        block.attn.fused_attn = True
    expected = tf.grad_rollout([a.detach() for a in attns], grads)[:, 0, 3:].reshape(2, 4, 4)  # CLS + 2 registers
    mine = ats.explain(model, x, "grad-rollout", targets=target)["grad-rollout"]
    torch.testing.assert_close(mine.lowres, expected)
    assert all(b.attn.fused_attn for b in model.blocks)


def test_an_attention_layer_that_runs_twice_is_refused_by_name():
    model = Rewired(tiny_vit(depth=1), lambda blocks: [blocks[0], blocks[0]])  # one block's weights, twice
    with pytest.raises(InputError, match="'vit.blocks.0.attn' ran 2 times"):
        ats.explain(model, images(1), "rollout")
    assert model.vit.blocks[0].attn.fused_attn
