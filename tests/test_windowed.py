"""Windowed and hierarchical attention placed on the image grid (explain/windowed.py), against the hand and the formula.

The toy Swin's rollout is computed by hand: its q and k are zero, so each window's attention is the softmax
of the relative-position bias (+ the shift mask), and the windows of the shifted layer are written out as
index lists. The real Swin / MaxViT models are checked against a dense rollout built from each library's
own window-partition code applied to a grid of token indices.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.explain.attention import explicit_attention

torchvision = pytest.importorskip("torchvision")

# The 4 × 4 grid of the toy's first stage, token t at (t // 4, t % 4). Layer 1: 2 × 2 windows, no shift.
PLAIN = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
# Layer 2: the grid rolled by (−1, −1), then cut into 2 × 2 windows: window (0, 0) holds x[1, 1], x[1, 2],
# x[2, 1], x[2, 2]; window (0, 1) holds x[1, 3], x[1, 0], x[2, 3], x[2, 0]; and so on.
SHIFTED = [[5, 6, 9, 10], [7, 4, 11, 8], [13, 14, 1, 2], [15, 12, 3, 0]]
# torchvision's shift mask: the rolled grid's rows 0–1, 2, 3 (and columns) are regions 0, 1, 2; a token attends
# only within its region (−100 elsewhere). The region of each token of SHIFTED, window by window:
REGIONS = [[0, 0, 0, 0], [1, 2, 1, 2], [3, 3, 6, 6], [4, 5, 7, 8]]
BIAS = {(dy, dx): 0.3 * dy - 0.7 * dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)}  # relative-position bias


def toy_swin() -> nn.Module:
    """torchvision's Swin: 8 × 8 images, 2 × 2 patches (a 4 × 4 grid), stage 1 = 2 blocks (shift 0, 1), patch
    merging to 2 × 2, stage 2 = 1 block (one window); q = k = 0 and the bias table set from BIAS; float64."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer([2, 2], 4, [2, 1], [1, 1], [2, 2], num_classes=3).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "ShiftedWindowAttention":
                dim = module.qkv.in_features
                module.qkv.weight[: 2 * dim] = 0  # q = k = 0: the scores are the bias alone
                module.qkv.bias[: 2 * dim] = 0
                table = module.relative_position_bias_table  # ((2M − 1)², heads), index (dy + 1) · 3 + (dx + 1)
                for (dy, dx), b in BIAS.items():
                    table[(dy + 1) * 3 + (dx + 1)] = b
    return model


def window_attention(tokens: list[int], regions: list[int] | None = None) -> torch.Tensor:
    """The 4 × 4 attention of one 2 × 2 window by hand: softmax_j(BIAS[pos_i − pos_j] − 100 · [regions differ])."""
    local = [(0, 0), (0, 1), (1, 0), (1, 1)]  # window-local positions, raster order
    scores = torch.tensor([[BIAS[(local[i][0] - local[j][0], local[i][1] - local[j][1])]
                            - (100.0 if regions and regions[i] != regions[j] else 0.0)
                            for j in range(4)] for i in range(4)], dtype=torch.float64)
    return scores.softmax(dim=-1)


def scattered(windows: list[list[int]], regions: list[list[int]] | None, size: int) -> torch.Tensor:
    a = torch.zeros(size, size, dtype=torch.float64)
    for w, tokens in enumerate(windows):
        local = window_attention(tokens, regions[w] if regions else None)
        for i, ti in enumerate(tokens):
            for j, tj in enumerate(tokens):
                a[ti, tj] = local[i, j]
    return a


def residual(a: torch.Tensor) -> torch.Tensor:
    a = (a + torch.eye(a.shape[0], dtype=a.dtype)) / 2
    return a / a.sum(dim=1, keepdim=True)


def test_toy_swin_rollout_equals_the_hand_computation() -> None:
    """r = u · Â_3 · D · Â_2 · Â_1: u the mean over the 4 final tokens (the head pools), D the patch merging
    (each 2 × 2 cell's four tokens get a quarter of their merged token), Â = (A + I) / 2."""
    model = toy_swin()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = ats.explain(model, x, ["rollout", "attention"])
    a1, a2 = scattered(PLAIN, None, 16), scattered(SHIFTED, REGIONS, 16)
    a3 = scattered([[0, 1, 2, 3]], None, 4)  # stage 2: one window over the 2 × 2 grid, no shift
    merge = torch.zeros(4, 16, dtype=torch.float64)  # merged token (a, b) covers fine (2a + i, 2b + j)
    for t in range(16):
        merge[(t // 4) // 2 * 2 + (t % 4) // 2, t] = 0.25
    u = torch.full((1, 4), 0.25, dtype=torch.float64)
    expected = u @ residual(a3) @ merge @ residual(a2) @ residual(a1)
    torch.testing.assert_close(out["rollout"].lowres, expected.view(1, 4, 4), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(out["attention"].lowres, (u @ a3).view(1, 2, 2), rtol=1e-12, atol=1e-15)
    assert out["rollout"].lowres.dtype == torch.float64


# --- real architectures against a dense rollout from each library's own partition code ------------------


def index_grid(h: int, w: int) -> torch.Tensor:
    return torch.arange(h * w, dtype=torch.float64).view(1, h, w, 1)  # (B, H, W, C): token t at (t // w, t % w)


def timm_swin_positions(block: nn.Module, h: int, w: int) -> torch.Tensor:
    from timm.models.swin_transformer import window_partition

    grid = torch.roll(index_grid(h, w), shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2))
    return window_partition(grid, block.window_size).reshape(-1, block.window_size[0] * block.window_size[1])


def hf_swin_positions(layer: nn.Module, h: int, w: int) -> torch.Tensor:
    module = __import__(type(layer).__module__, fromlist=["window_partition"])
    grid = layer.cyclic_shift(index_grid(h, w)) if hasattr(layer, "cyclic_shift") else \
        torch.roll(index_grid(h, w), shifts=(-layer.shift_size, -layer.shift_size), dims=(1, 2))
    return module.window_partition(grid, layer.window_size).reshape(-1, layer.window_size ** 2)


def timm_maxvit_positions(block: nn.Module, h: int, w: int) -> torch.Tensor:
    from timm.models.maxxvit import grid_partition, window_partition

    cut = window_partition if block.partition_block else grid_partition
    size = block.partition_size
    return cut(index_grid(h, w), list(size)).reshape(-1, size[0] * size[1])


def tv_maxvit_positions(layer: nn.Module, h: int, w: int) -> torch.Tensor:
    grid = index_grid(h, w).permute(0, 3, 1, 2)  # (B, C, H, W)
    return layer.partition_swap(layer.partition_op(grid, layer.p))[0, ..., 0]  # (G, P): the model's own ops


def tv_swin_positions(attn: nn.Module, h: int, w: int) -> torch.Tensor:
    """torchvision's `shifted_window_attention` index ops, ported (it has no partition function of its own)."""
    (m0, m1) = attn.window_size
    shift = [0 if m >= n else s for m, n, s in zip(attn.window_size, (h, w), attn.shift_size, strict=True)]
    x = torch.roll(index_grid(h, w), shifts=(-shift[0], -shift[1]), dims=(1, 2)) if sum(shift) else index_grid(h, w)
    return x.view(1, h // m0, m0, w // m1, m1, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, m0 * m1)


def build(family: str) -> tuple[nn.Module, int, list]:
    """A tiny random float64 model, its image size, and per attention layer (module, owner, grid, positions fn)."""
    import timm
    import transformers as T
    from torchvision.models import maxvit
    from torchvision.models import swin_transformer as tvs

    torch.manual_seed(0)
    swin = dict(num_classes=5, img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=2)
    hf = dict(num_labels=5, image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=2)
    if family == "timm-swin":
        model = timm.create_model("swin_tiny_patch4_window7_224", **swin)
    elif family == "timm-swinv2":
        model = timm.create_model("swinv2_tiny_window8_256", **swin)
    elif family == "hf-swin":
        model = T.SwinForImageClassification(T.SwinConfig(**hf))
    elif family == "hf-swinv2":
        model = T.Swinv2ForImageClassification(T.Swinv2Config(**hf))
    elif family == "tv-swinv2":
        model = tvs.SwinTransformer([4, 4], 16, [2, 2], [1, 2], [2, 2], num_classes=5, block=tvs.SwinTransformerBlockV2,
                                    downsample_layer=tvs.PatchMergingV2)
    elif family == "timm-maxvit":
        model = timm.create_model("maxvit_pico_rw_256", num_classes=5, img_size=64, embed_dim=(16, 32), depths=(1, 1),
                                  block_type=("M", "M"), stem_width=8, transformer_dim_head=8,
                                  transformer_window_size=(2, 2), transformer_grid_size=(2, 2))
    elif family == "tv-maxvit":
        model = maxvit.MaxVit((64, 64), 8, 2, [16, 32], [1, 1], 8, 0.0, num_classes=5)
    else:  # LeViT (global, subsampling attention), CoAtNet (global 2-D), MobileViT (unfolded patches)
        from families import FAMILIES

        model = FAMILIES[family].build()
    model = model.double().eval()
    size = {"timm-levit": 128, "timm-mobilevit": 128}.get(family, 64 if "maxvit" in family or "coatnet" in family
                                                          else 32)
    layers = []
    names = dict(model.named_modules())
    from attnscope.explain.attention import attention_modules

    for name, module in attention_modules(model):
        owner = names[name.rpartition(".")[0]]
        if family.startswith("timm-swin"):
            layers.append((owner, timm_swin_positions))
        elif family.startswith("hf-swin"):
            layer = owner if hasattr(owner, "shift_size") else names[name.rsplit(".", 2)[0]]
            layers.append((layer, hf_swin_positions))
        elif family == "tv-swinv2":
            layers.append((module, tv_swin_positions))
        elif family == "timm-maxvit":
            layers.append((owner, timm_maxvit_positions))
        elif family == "tv-maxvit":
            layers.append((names[name.rsplit(".", 2)[0]], tv_maxvit_positions))
        elif family == "timm-mobilevit":
            layers.append((names[name.rsplit(".", 3)[0]], mobilevit_positions))
        else:
            layers.append((owner, None))  # global: every token of the query and key grids, raster order
    return model, size, layers


def mobilevit_positions(block: nn.Module, h: int, w: int) -> torch.Tensor:
    """timm's MobileViT unfolding (`MobileVitBlock.forward`'s reshapes, ported): sequence p = a pixel position
    of the patch, its tokens the patches."""
    (ph, pw), x = block.patch_size, index_grid(h, w).permute(0, 3, 1, 2)  # (B, C, H, W)
    nh, nw = h // ph, w // pw
    x = x.reshape(nh, ph, nw, pw).transpose(1, 2)
    return x.reshape(1, 1, nh * nw, ph * pw).transpose(1, 3).reshape(ph * pw, nh * nw)


def capture(model: nn.Module, x: torch.Tensor, target: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every layer's weights (nW, heads, N, N) and ∂y/∂ them, in run order, read at the probes."""
    with explicit_attention(model) as layers:
        seen = []
        handles = [a.probe.register_forward_hook(lambda _m, _i, o: seen.append(o) or o.retain_grad())
                   for a in layers]
        model(x)[0, target].backward() if isinstance(model(x), torch.Tensor) else model(x).logits[0, target].backward()
        for h in handles:
            h.remove()
    half = len(seen) // 2  # the first forward's records belong to the isinstance check
    return [a.detach() for a in seen[half:]], [a.grad for a in seen[half:]]


def dense(weights: torch.Tensor, pq: torch.Tensor, pk: torch.Tensor, tq: int, tk: int) -> torch.Tensor:
    a = torch.zeros(tq, tk, dtype=torch.float64)
    fused = weights.double().mean(dim=1)  # (nW, Nq, Nk); Hugging Face forms its weights in float32
    for w in range(pq.shape[0]):
        a[pq[w].long()[:, None], pk[w].long()[None, :]] = fused[w]
    return a


def merge(coarse: int, fine: int) -> torch.Tensor:
    """D (Tc, Tf): each coarse token depends equally on the f × f fine tokens it covers."""
    hc, hf = int(coarse ** 0.5), int(fine ** 0.5)
    f = hf // hc
    d = torch.zeros(coarse, fine, dtype=torch.float64)
    for t in range(fine):
        d[(t // hf) // f * hc + (t % hf) // f, t] = 1.0 / (f * f)
    return d


def dense_all(layers: list, weights: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (nW, heads, Nq, Nk) as dense (Tq, Tk): the window positions from the library's own code."""
    out = []
    for (owner, positions), a in zip(layers, weights, strict=True):
        tq, tk = a.shape[0] * a.shape[-2], a.shape[0] * a.shape[-1]
        if positions is None:
            pq, pk = torch.arange(tq)[None], torch.arange(tk)[None]
        else:
            pq = pk = positions(owner, int(tq ** 0.5), int(tq ** 0.5))
        out.append((pq, pk))
    return out


def product(mats: list[torch.Tensor], residual_rule: str) -> torch.Tensor:
    """u · Â_L ··· Â_1 from the mean over the last queries: Â = (Ã·D + I)/2 renormalised ("rollout") or I + Ã·D
    ("add") where the queries are the stream (D: coarse keys spread over the query grid), Ã where they are
    fewer than the keys (a subsampling attention); D between layers of different grids."""
    r = torch.full((1, mats[-1].shape[0]), 1.0 / mats[-1].shape[0], dtype=torch.float64)
    for i in range(len(mats) - 1, -1, -1):
        a = mats[i]
        tq, tk = a.shape
        if tq >= tk:
            a = a @ merge(tk, tq) if tk != tq else a
            eye = torch.eye(tq, dtype=torch.float64)
            r = r @ (residual(a) if residual_rule == "rollout" else eye + a)
            stream = tq
        else:
            r, stream = r @ a, tk
        if i and mats[i - 1].shape[0] != stream:
            r = r @ merge(stream, mats[i - 1].shape[0])
    return r


WINDOWED = ["timm-swin", "timm-swinv2", "hf-swin", "hf-swinv2", "tv-swinv2", "timm-maxvit", "tv-maxvit",
            "timm-levit", "timm-coatnet", "timm-mobilevit"]


@pytest.mark.parametrize("family", WINDOWED)
def test_windowed_maps_equal_a_dense_rollout_from_the_librarys_partition(family: str) -> None:
    model, size, layers = build(family)
    x = torch.rand(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    weights, grads = capture(model, x, 2)
    assert len(weights) == len(layers)
    positions = dense_all(layers, weights)
    shape = [(a.shape[0] * a.shape[-2], a.shape[0] * a.shape[-1]) for a in weights]
    mats = [dense(a, pq, pk, *t) for a, (pq, pk), t in zip(weights, positions, shape, strict=True)]
    gmats = [dense((a * g).clamp_min(0), pq, pk, *t)
             for a, g, (pq, pk), t in zip(weights, grads, positions, shape, strict=True)]
    r, q = product(mats, "rollout"), product(gmats, "add")
    out = ats.explain(model, x, ["rollout", "grad-rollout", "attention"], targets=2)
    tol = dict(rtol=1e-10, atol=1e-14) if weights[0].dtype == torch.float64 else dict(rtol=1e-5, atol=1e-8)
    first = mats[0].shape[0] if mats[0].shape[0] >= mats[0].shape[1] else mats[0].shape[1]
    side, last = int(first ** 0.5), int(mats[-1].shape[1] ** 0.5)
    raw = torch.full((1, mats[-1].shape[0]), 1.0 / mats[-1].shape[0], dtype=torch.float64) @ mats[-1]
    for name, ref in (("rollout", r.view(1, side, side)), ("grad-rollout", q.view(1, side, side)),
                      ("attention", raw.view(1, last, last))):
        torch.testing.assert_close(out[name].lowres.double(), ref, **tol)


def test_chefer_and_legrad_on_a_windowed_model_are_the_dense_composition() -> None:
    """chefer: the grad-rollout product with (∇A ⊙ R_A)⁺, R_A = A ⊙ ∂y/∂A under AttnLRP's rules / y (read at the
    probes under the `attnlrp` rewrite); legrad with last=1: mean over heads and queries of ReLU(∂y/∂A_L) at the
    keys of the last layer's windows."""
    from attnscope.explain.rewrites import rewritten

    model, size, layers = build("timm-swin")
    x = torch.rand(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    weights, grads = capture(model, x, 2)
    with rewritten(model, "attnlrp") as applied:
        ((_, lrp_layers),) = applied
        seen = []
        handles = [a.probe.register_forward_hook(lambda _m, _i, o: seen.append(o) or o.retain_grad())
                   for a in lrp_layers]
        y = model(x)[0, 2]
        y.backward()
        for h in handles:
            h.remove()
    q = None
    mats = []
    for (owner, positions), a, g, r in zip(layers, weights, grads, seen, strict=True):
        t = a.shape[0] * a.shape[-1]
        side = int(t ** 0.5)
        relevance = r.detach() * r.grad / y.detach()
        pos = positions(owner, side, side)
        mats.append(dense((g * relevance).clamp_min(0), pos, pos, t, t))
    q = product(mats, "add")
    out = ats.explain(model, x, ["chefer", "legrad"], targets=2, options={"legrad": {"last": 1}})
    side = int(mats[0].shape[0] ** 0.5)
    torch.testing.assert_close(out["chefer"].lowres, q.view(1, side, side), rtol=1e-10, atol=1e-14)
    owner, positions = layers[-1]
    g = grads[-1].clamp_min(0).mean(dim=1)  # (nW, N, N): heads averaged
    t = g.shape[0] * g.shape[-1]
    keys = torch.zeros(t, dtype=torch.float64)
    keys.index_add_(0, positions(owner, int(t ** 0.5), int(t ** 0.5)).long().flatten(), g.sum(dim=1).flatten() / t)
    torch.testing.assert_close(out["legrad"].lowres, keys.view(1, int(t ** 0.5), -1), rtol=1e-10, atol=1e-14)


def test_k_targets_per_image_equal_separate_calls_on_a_windowed_model() -> None:
    model, size, _ = build("hf-swin")
    x = torch.rand(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    methods = ["rollout", "grad-rollout", "chefer", "legrad", "attention"]
    both = ats.explain(model, x, methods, targets=torch.tensor([[1, 4], [0, 2]]))
    for k, column in enumerate(([1, 0], [4, 2])):
        one = ats.explain(model, x, methods, targets=torch.tensor(column))
        for m in methods:
            torch.testing.assert_close(both[m].values[:, k], one[m].values, rtol=1e-5, atol=1e-8)
