"""AttnLRP, Chefer's transformer attribution and LeGrad: against lxt's own rules and torchcam's LeGrad, and the
properties that pin them (conservation of CP-LRP on a bias-free ViT, LeGrad's last layer from the shared pass)."""

import importlib.util
import os
import sys
import types

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

import attnscope as ats
from attnscope.maps import normalize


@pytest.fixture(scope="module")
def lxt():
    """lxt's rules and patches, loaded without its package __init__ (lxt 2.1 imports Hugging Face model modules
    that transformers 5 no longer has; the ViT patches need none of them)."""
    spec = importlib.util.find_spec("lxt")
    if spec is None:
        pytest.skip("lxt is not installed")
    base = os.path.dirname(spec.origin)
    saved = {k: v for k, v in sys.modules.items() if k == "lxt" or k.startswith("lxt.")}
    for name in ("lxt", "lxt.efficient", "lxt.efficient.models"):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(base, *name.split(".")[1:])]
        sys.modules[name] = package
    import lxt.efficient.patches as patches
    import lxt.efficient.rules as rules
    from lxt.efficient.models.vit_torch import cp_LRP

    yield types.SimpleNamespace(patches=patches, rules=rules, cp_LRP=cp_LRP)
    for name in [k for k in sys.modules if k == "lxt" or k.startswith("lxt.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def torchvision_vit(layers: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=5).eval()
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return model


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = ats.models.get("vit", depth=2, dim=32, heads=2, image_size=32, num_classes=5).eval()
    nn.init.normal_(model.head.weight, std=0.5)
    return model


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
T = torch.tensor([1, 3])


def assert_relative(ours: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    diff = float((ours - ref).detach().abs().max() / ref.detach().abs().max())
    assert diff <= tol, f"{diff:.2e}"


def test_attnlrp_cp_equals_lxt_on_torchvision_vit(lxt) -> None:
    model = torchvision_vit()
    ours = ats.explain(model, X, "attnlrp", targets=T, options={"attnlrp": {"attention": "cp"}})["attnlrp"].values
    saved = {cls: cls.__dict__["forward"] for cls in lxt.cp_LRP}
    try:
        for cls, patch in lxt.cp_LRP.items():  # lxt patches torch's classes for the whole process
            patch(cls)
        x = X.clone().requires_grad_()
        model(x)[torch.arange(2), T].sum().backward()
        ref = (x * x.grad).sum(dim=1)
    finally:
        for cls, forward in saved.items():
            cls.forward = forward
            if "original_forward" in cls.__dict__:
                delattr(cls, "original_forward")
    assert_relative(ours, ref, 1e-5)


def lxt_tinyvit(model: nn.Module, x: torch.Tensor, lxt) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """TinyViT's forward written with lxt's AttnLRP rules (q, k gradients / 4, v / 2, identity rule on GELU and
    LayerNorm), keeping each attention's weights for their gradients."""
    b = x.shape[0]
    patches = model.patch_embed(x).flatten(2).transpose(1, 2)
    prefix = torch.cat([model.cls_token, model.reg_tokens], dim=1).expand(b, -1, -1)
    h = torch.cat([prefix, patches], dim=1) + model.pos_embed
    weights = []
    for block in model.blocks:
        a = block.attn
        y = lxt.patches.layer_norm_forward(block.norm1, h)
        n, t, d = y.shape
        q, k, v = a.qkv(y).view(n, t, 3, a.heads, d // a.heads).permute(2, 0, 3, 1, 4)
        q, k, v = (lxt.rules.divide_gradient(q, 4), lxt.rules.divide_gradient(k, 4), lxt.rules.divide_gradient(v, 2))
        attn = ((q * a.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        attn.retain_grad()
        weights.append(attn)
        h = h + a.proj((attn @ v).transpose(1, 2).reshape(n, t, d))
        first, act, _drop, second = block.mlp
        h = h + second(lxt.rules.identity_rule_implicit(act, first(lxt.patches.layer_norm_forward(block.norm2, h))))
    return model.head(lxt.patches.layer_norm_forward(model.norm, h)[:, 0]), weights


def test_attnlrp_equals_lxts_rules_on_tinyvit(lxt) -> None:
    model = tiny_vit()
    ours = ats.explain(model, X, "attnlrp", targets=T)["attnlrp"].values
    x = X.clone().requires_grad_()
    logits, _ = lxt_tinyvit(model, x, lxt)
    logits[torch.arange(2), T].sum().backward()
    assert_relative(ours, (x * x.grad).sum(dim=1), 1e-5)


def test_chefer_equals_the_rollout_of_lxt_relevance_times_gradient(lxt) -> None:
    """R_A = A ⊙ ∂y/∂A under AttnLRP's rules / y; A·V gives A half the relevance (lxt halves at v and divides q, k
    by 4, so its gradient at A is the undivided one: half of it is A's share). Rollout as the reference code's."""
    model = tiny_vit()
    ours = ats.explain(model, X, "chefer", targets=T)["chefer"].lowres
    x = X.clone().requires_grad_()
    logits, weights = lxt_tinyvit(model, x, lxt)
    y = logits[torch.arange(2), T]
    y.sum().backward()
    relevance = [0.5 * a.detach() * a.grad / y.detach().view(-1, 1, 1, 1) for a in weights]
    from attnscope.explain.attention import explicit_attention

    with explicit_attention(model) as layers:
        seen = []
        handles = [layer.probe.register_forward_hook(lambda _m, _i, o: seen.append(o) or o.retain_grad())
                   for layer in layers]
        model(X)[torch.arange(2), T].sum().backward()
        for handle in handles:
            handle.remove()
    joint = torch.eye(relevance[0].shape[-1]).expand(2, -1, -1)
    for r, a in zip(relevance, seen, strict=True):
        joint = joint + (a.grad * r).clamp_min(0).mean(dim=1) @ joint
    ref = joint[:, 0, 1:].reshape(2, 4, 4)
    assert_relative(ours, ref, 1e-4)


def test_cp_lrp_conserves_the_score_on_a_bias_free_tinyvit() -> None:
    model = tiny_vit()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name in ("cls_token", "pos_embed"):
                p.zero_()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
    out = ats.explain(model, X, "attnlrp", targets=T, options={"attnlrp": {"attention": "cp"}})
    torch.testing.assert_close(out["attnlrp"].values.sum(dim=(1, 2)), out.logits[torch.arange(2), T],
                               rtol=1e-4, atol=1e-6)


def test_legrad_equals_torchcam_on_torchvision_vit() -> None:
    from torchcam.methods import LeGrad

    model = torchvision_vit(3)
    ours = ats.explain(model, X, "legrad", targets=T, options={"legrad": {"pool": "mean"}})["legrad"].lowres
    with LeGrad(model, list(model.encoder.layers)) as extractor:
        ref = extractor(T.tolist(), model(X))[0]
    assert float((normalize(ours) - ref).abs().max()) <= 1e-5


def test_legrads_last_layer_is_the_shared_pass_attention_gradient() -> None:
    """The last layer's readout is the model's own output, so E_L = mean_{heads, queries} ReLU(∂y/∂A_L)."""
    model = tiny_vit()
    out = ats.explain(model, X, "legrad", targets=T, options={"legrad": {"last": 1}})["legrad"].lowres
    from attnscope.explain.attention import explicit_attention

    with explicit_attention(model) as layers:
        seen = []
        handle = layers[-1].probe.register_forward_hook(lambda _m, _i, o: seen.append(o) or o.retain_grad())
        model(X)[torch.arange(2), T].sum().backward()
        handle.remove()
    ref = seen[0].grad.clamp_min(0).mean(dim=(1, 2))[:, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-9)


def legrad_reference(model: VisionTransformer, x: torch.Tensor, t: torch.Tensor,
                     blocks: list[nn.Module] | None = None) -> torch.Tensor:
    """LeGrad from the formula on a torchvision ViT, layer by layer: s_l = heads(ln(z_l)[:, 0])[t] from block l's
    output z_l, E_l = mean over heads and queries of ReLU(∂s_l/∂A_l) at the patch keys, the map the mean of E_l."""
    from attnscope.explain.attention import explicit_attention

    with explicit_attention(model) as layers:
        attn, streams = [], []
        hooks = [a.probe.register_forward_hook(lambda _m, _i, o: attn.append(o)) for a in layers]
        hooks += [b.register_forward_hook(lambda _m, _i, o: streams.append(o))
                  for b in blocks or model.encoder.layers]
        model(x)
        for h in hooks:
            h.remove()
    maps = []
    for a, z in zip(attn, streams, strict=True):
        s = model.heads(model.encoder.ln(z)[:, 0])[torch.arange(x.shape[0]), t].sum()
        (g,) = torch.autograd.grad(s, a, retain_graph=True)
        maps.append(g.clamp_min(0).mean(dim=(1, 2))[:, 1:])
    side = int(maps[0].shape[1] ** 0.5)
    return torch.stack(maps).mean(dim=0).reshape(x.shape[0], side, side)


class BatchFromInput(nn.Module):
    """A torchvision ViT whose head reshapes by the input's batch size: it cannot read several streams stacked."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x).reshape(x.shape[0], -1)


class Grow(nn.Module):
    """A last layer that wraps its block and appends a token: its output is not the block's stream."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return torch.cat([y, torch.zeros_like(y[:, :1])], dim=1)


def warm_legrad(model: VisionTransformer) -> tuple[torch.Tensor, int]:
    """LeGrad's map of a warm call (the first call also traces which tokens the head reads, cached) and how many
    passes that call ran (the patch embedding's forwards)."""
    ats.explain(model, X, "legrad", targets=T)
    calls = []
    handle = model.conv_proj.register_forward_hook(lambda _m, _i, _o: calls.append(1))
    try:
        return ats.explain(model, X, "legrad", targets=T)["legrad"].lowres, len(calls)
    finally:
        handle.remove()


def test_legrad_where_the_last_block_is_not_its_layers_outermost_module() -> None:
    """The stack cannot go in at the outermost module (it is not the stream): the one forward is the plain one
    (not repeated; it is also the call's shared pass) and the head reads the streams in one rerun, two passes in a
    warm call; the formula's map."""
    model = torchvision_vit(3)
    model.encoder.layers[-1] = Grow(model.encoder.layers[-1])
    ref = legrad_reference(model, X, T, [*model.encoder.layers[:-1], model.encoder.layers[-1].block])
    ours, passes = warm_legrad(model)
    assert passes == 2
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-9)


def test_legrad_with_the_models_head_is_the_formula_in_one_forward() -> None:
    """pool="model": the last block outputs every layer's stream stacked in the one forward that records the
    attention, and that forward is the call's shared pass (one pass in a warm call); a head that cannot read the
    stack falls back to one rerun per stream. Both equal the layer-by-layer formula."""
    model = torchvision_vit(3)
    ref = legrad_reference(model, X, T)
    ours, passes = warm_legrad(model)
    assert passes == 1
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-9)
    wrapped = ats.explain(BatchFromInput(model), X, "legrad", targets=T)["legrad"].lowres
    torch.testing.assert_close(wrapped, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("targets", [None, 2, "tensor"])
def test_legrads_own_forward_as_the_shared_pass_gives_the_calls_outputs(targets) -> None:
    """LeGrad alone (its forward is the shared pass) gives the maps, logits, targets and scores of LeGrad asked with
    another method (a separate shared pass), for predicted, int and per-image targets; targets (B, K) and
    pool="mean" take the shared pass (two passes, the same maps as before)."""
    model = torchvision_vit(3)
    t = T if targets == "tensor" else targets
    alone = ats.explain(model, X, "legrad", targets=t)
    both = ats.explain(model, X, ["legrad", "attention"], targets=t)
    torch.testing.assert_close(alone["legrad"].values, both["legrad"].values, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(alone.logits, both.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(alone.targets, both.targets) and alone.targets.shape == (2,)
    with torch.no_grad():
        torch.testing.assert_close(alone.logits, model(X), rtol=1e-5, atol=1e-5)
    calls = []
    handle = model.conv_proj.register_forward_hook(lambda _m, _i, _o: calls.append(1))
    try:
        top2 = ats.explain(model, X, "legrad", targets=torch.stack([T, (T + 1) % 5], 1))
        assert len(calls) == 2  # K targets per image: the shared pass resolves them first
        calls.clear()
        mean = ats.explain(model, X, "legrad", targets=T, options={"legrad": {"pool": "mean"}})
        assert len(calls) == 2
    finally:
        handle.remove()
    given = ats.explain(model, X, "legrad", targets=T)["legrad"].values
    torch.testing.assert_close(top2["legrad"].values[:, 0], given, rtol=1e-5, atol=1e-8)
    shared = ats.explain(model, X, ["legrad", "attention"], targets=T, options={"legrad": {"pool": "mean"}})
    torch.testing.assert_close(mean["legrad"].values, shared["legrad"].values, rtol=1e-5, atol=1e-8)


def snapshot(model: nn.Module) -> tuple:
    hooks = [(n, len(m._forward_hooks), len(m._forward_pre_hooks), "forward" in m.__dict__, getattr(m, "fused_attn", 0))
             for n, m in model.named_modules()]
    return hooks, [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()], \
        {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: tuple, b: tuple) -> None:
    assert a[:3] == b[:3]
    assert all(torch.equal(a[3][k], b[3][k]) for k in a[3])


class Boom(Exception):
    pass


@pytest.mark.parametrize("name", ["attnlrp", "chefer", "legrad"])
def test_model_left_as_found_batched_equals_one_by_one_and_deterministic(name: str) -> None:
    """The invariants of every method (tests/test_explain_invariants.py covers the CNN kinds), on TinyViT."""
    model = tiny_vit().train()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    before = snapshot(model)
    batched = ats.explain(model, x, name)[name].values
    assert_same(snapshot(model), before)
    single = torch.cat([ats.explain(model, x[i : i + 1], name)[name].values for i in range(3)])
    torch.testing.assert_close(single, batched, rtol=1e-4, atol=1e-5 * float(batched.abs().max()))
    assert torch.equal(ats.explain(model, x, name)[name].values, batched)
    handle = model.blocks[1].mlp.register_forward_hook(lambda *_: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom):
        ats.explain(model, x, name)
    handle.remove()
    assert_same(snapshot(model), before)
