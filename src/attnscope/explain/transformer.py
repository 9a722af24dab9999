"""Transformer attention: raw attention, rollout, gradient-weighted rollout and attention flow.

The maths are pure functions over the attention weights of one forward pass, one tensor
(B, heads, T, T) per layer in forward order (row i: how token i attends to every token j; rows
sum to 1). They return token-to-token relevance (B, T, T) or per-token scores (B, T). The
registered methods read the weights (and their gradients) from the shared pass and compose them
on the image's token grid (`explain.windowed`): for a ViT that is the CLS row of the product,
reshaped to the patch grid (B, h, w); windowed and hierarchical models have their windows
scattered back and their stages joined. `explain` upsamples the grid to the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.attention import no_attention_reason
from attnscope.explain.method import register_method
from attnscope.explain.tokens import TokenLayout
from attnscope.explain.windowed import TokenGraph, at_layer, per_sequence, propagate, through

HEAD_FUSIONS = ("mean", "max", "min")
FLOW_SCALE = 1 << 20  # capacities are rounded to multiples of 2⁻²⁰ for the integer max-flow solver
FLOW_MAX_EDGES = 250_000  # layers · T² per image; above this `attention_flow` refuses (see its docstring)


def fuse_heads(attn: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(B, heads, T, T) → (B, T, T): the mean, max or min over heads."""
    _check_attention(attn)
    if how == "mean":
        return attn.mean(dim=1)
    if how == "max":
        return attn.amax(dim=1)
    if how == "min":
        return attn.amin(dim=1)
    raise InputError(f"head_fusion must be one of {HEAD_FUSIONS}, got {how!r}")


DISCARD_RULES = ("reference", "spare-cls")


def discard_lowest(a: torch.Tensor, ratio: float, keep: int = 0, rule: str = "reference") -> torch.Tensor:
    """Zero the smallest entries of each image's (T, T) matrix, never the entry [keep, keep] (CLS to itself).

    k = ⌊ratio·T²⌋. rule="reference" is the reference rollout code's (jacobgil/vit-explain): take the
    k smallest entries of the whole matrix, then spare [keep, keep] if it is among them — so only
    k − 1 are zeroed then. rule="spare-cls" leaves [keep, keep] out first and zeroes k others.
    (B, T, T) → (B, T, T).
    """
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"discard_ratio must be in [0, 1), got {ratio}")
    if rule not in DISCARD_RULES:
        raise InputError(f"discard_rule must be one of {DISCARD_RULES}, got {rule!r}")
    b, t, _ = a.shape
    k = int(ratio * t * t)
    if k == 0:
        return a
    flat = a.reshape(b, t * t)  # (B, T²)
    protected = keep * t + keep
    ranked = flat.clone()
    if rule == "spare-cls":
        ranked[:, protected] = torch.inf  # never among the smallest
    drop = ranked.topk(k, dim=1, largest=False).indices  # (B, k)
    zero = torch.ones_like(drop, dtype=torch.bool) if rule == "spare-cls" else drop != protected
    out = flat.clone()
    out.scatter_(1, drop, torch.where(zero, 0.0, out.gather(1, drop)))
    return out.view(b, t, t)


def with_residual(a: torch.Tensor) -> torch.Tensor:
    """Â = (A + I) / 2 with rows renormalised to sum to 1: the residual connection (Abnar & Zuidema 2020)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    a = (a + eye) / 2
    return a / a.sum(dim=-1, keepdim=True)  # (B, T, T)


def rollout(
    attentions: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    cls_index: int = 0,
    discard_rule: str = "reference",
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, ACL 2020): R = Â_L · Â_{L-1} ··· Â_1, Â_l = with_residual(A_l).

    A_l is layer l's attention with heads fused and, optionally, its smallest entries discarded
    (`discard_lowest`, never the [CLS, CLS] entry). Returns R (B, T, T): row i is output token i's
    relevance to each input token.
    """
    joint = None
    for attn in _checked_layers(attentions):
        a = discard_lowest(fuse_heads(attn, head_fusion), discard_ratio, keep=cls_index, rule=discard_rule)
        a = with_residual(a)  # (B, T, T)
        joint = a if joint is None else a @ joint  # later layers multiply from the left
    return joint


def grad_rollout(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Gradient-weighted rollout (Chefer et al., ICCV 2021): R_0 = I, R_l = R_{l-1} + Ā_l · R_{l-1}.

    Ā_l = E_heads[(∇A_l ⊙ A_l)⁺], with ∇A_l = ∂y/∂A_l for the explained score y; `gradients[l]`
    must belong to `attentions[l]` (both in forward order). Returns R_L (B, T, T).
    """
    attentions = _checked_layers(attentions)
    if len(gradients) != len(attentions):
        raise InputError(f"{len(attentions)} attention layers but {len(gradients)} gradients")
    b, _, t, _ = attentions[0].shape
    joint = torch.eye(t, dtype=attentions[0].dtype, device=attentions[0].device).expand(b, t, t)
    for attn, grad in zip(attentions, gradients, strict=True):
        if grad.shape != attn.shape:
            raise InputError(f"gradient {tuple(grad.shape)} does not match attention {tuple(attn.shape)}")
        a = (grad * attn).clamp_min(0).mean(dim=1)  # (B, T, T)
        joint = joint + a @ joint
    return joint


def attention_flow(
    attentions: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    sink: int = 0,
    max_edges: int = FLOW_MAX_EDGES,
    readout: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention flow (Abnar & Zuidema, ACL 2020): max-flow from each input token to output token `sink`.

    The graph has a node per token and layer (L + 1 layers); node j of layer l-1 feeds node i of
    layer l with capacity Â_l[i, j] (`with_residual` of the head-fused attention). Returns
    (B, T): the maximum flow from input token j to `sink` at the top layer. `readout` (T,): a head
    that reads several tokens (a mean pool): the sink is one more node that top token i feeds with
    capacity readout[i] (for a one-hot readout at `sink`, the same flow).

    Exact up to rounding: capacities are rounded to multiples of 1/FLOW_SCALE (2⁻²⁰) for scipy's
    integer solver, so each value is within (edges of a minimum cut) · 2⁻²¹ of the exact flow.
    Cost is T max-flow problems per image over L · T² edges, so it is for small models: above
    `max_edges` edges it raises instead of running for hours.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    attentions = _checked_layers(attentions)
    (b, _, t, _), n_layers = attentions[0].shape, len(attentions)
    if n_layers * t * t > max_edges:
        raise InputError(
            f"attention flow over {n_layers} layers of {t} tokens needs {n_layers * t * t} edges per image, "
            f"above max_edges={max_edges}; use rollout, or raise max_edges for a long run"
        )
    if not 0 <= sink < t:
        raise InputError(f"sink token {sink} is out of range for {t} tokens")
    layers = [with_residual(fuse_heads(a, head_fusion)) for a in attentions]
    caps = torch.stack(layers, dim=1).detach().double().cpu().numpy()  # (B, L, T, T)
    n_nodes = (n_layers + 1) * t + (readout is not None)
    # Edge (node j of layer l) → (node i of layer l + 1) for every l, i, j; node id = layer · T + token.
    lay, dst, src = np.meshgrid(np.arange(n_layers), np.arange(t), np.arange(t), indexing="ij")
    rows, cols = (lay * t + src).ravel(), ((lay + 1) * t + dst).ravel()
    target = n_layers * t + sink
    if readout is not None:  # top token i → the readout node, capacity readout[i]
        rows = np.concatenate([rows, n_layers * t + np.arange(t)])
        cols = np.concatenate([cols, np.full(t, n_nodes - 1)])
        target = n_nodes - 1
        read = np.rint(readout.detach().double().cpu().numpy() * FLOW_SCALE).astype(np.int32)
    out = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        weights = np.rint(caps[i].ravel() * FLOW_SCALE).astype(np.int32)  # same (l, i, j) order as rows/cols
        if readout is not None:
            weights = np.concatenate([weights, read])
        graph = csr_matrix((weights, (rows, cols)), shape=(n_nodes, n_nodes))
        for j in range(t):
            out[i, j] = maximum_flow(graph, j, target).flow_value / FLOW_SCALE
    return out.to(dtype=attentions[0].dtype, device=attentions[0].device)


def fused(attentions: torch.Tensor, graph: TokenGraph, index: int, how: str = "mean") -> torch.Tensor:
    """Layer `index`'s weights (N·nW, heads, Nq, Nk) with heads fused, per sequence: (N, nW, Nq, Nk)."""
    if how not in HEAD_FUSIONS:
        raise InputError(f"head_fusion must be one of {HEAD_FUSIONS}, got {how!r}")
    a = per_sequence(attentions, graph.layers[index])
    return {"mean": lambda: a.mean(dim=2), "max": lambda: a.amax(dim=2), "min": lambda: a.amin(dim=2)}[how]()


def _start(graph: TokenGraph, rows: int, like: torch.Tensor) -> torch.Tensor:
    return graph.readout.to(like)[None].expand(rows, -1)


@register_method("attention", "transformer", applies=no_attention_reason)
def raw_attention(attentions: Sequence[torch.Tensor], token_graph: TokenGraph, *, head_fusion: str = "mean",
                  layer_index: int = -1) -> torch.Tensor:
    """Raw attention: what one layer's weights give each token from the tokens the output reads — A_l[CLS, patches]
    in a ViT, the mean over the queries a pooled head reads otherwise — heads fused, placed on the grid (windows
    scattered back); l = last by default."""
    n = len(token_graph.layers)
    if not -n <= layer_index < n:
        raise InputError(f"layer_index {layer_index} is out of range for {n} attention layers")
    i = layer_index % n
    a = fused(attentions[i], token_graph, i, head_fusion)
    u = at_layer(token_graph, i).to(a)[None].expand(a.shape[0], -1)
    p = token_graph.layers[i]
    return token_graph.to_grid(through(u, a, p), p.keys)


@register_method("rollout", "transformer", applies=no_attention_reason)
def attention_rollout(attentions: Sequence[torch.Tensor], token_graph: TokenGraph, *, head_fusion: str = "mean",
                      discard_ratio: float = 0.0, discard_rule: str = "reference") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, ACL 2020): the readout row (CLS) of Â_L ··· Â_1, Â = (A + I) / 2
    row-normalised; windows, shifts and stages composed on the grid (`explain.windowed`)."""
    graph = token_graph
    graph.check_composes("rollout")
    if discard_ratio and not graph.is_global:
        raise NotApplicableError("discard_ratio discards the smallest entries of one global (T, T) matrix per layer; "
                                 "this model's attention is windowed or hierarchical: use discard_ratio=0")
    keep = graph.cls or 0
    mats = [fused(a, graph, i, head_fusion) for i, a in enumerate(attentions)]
    if discard_ratio:
        mats = [discard_lowest(m[:, 0], discard_ratio, keep, discard_rule)[:, None] for m in mats]
    return graph.to_grid(propagate(graph, mats, _start(graph, mats[0].shape[0], mats[0]), "rollout"))


@register_method("grad-rollout", "transformer", applies=no_attention_reason)
def gradient_rollout(attentions: Sequence[torch.Tensor], attention_grads: Sequence[torch.Tensor],
                     token_graph: TokenGraph) -> torch.Tensor:
    """Gradient-weighted rollout (Chefer et al., ICCV 2021): readout row of Π_l (I + E_h[(∇A_l ⊙ A_l)⁺]);
    class-specific; windows, shifts and stages composed on the grid (`explain.windowed`)."""
    graph = token_graph
    graph.check_composes("grad-rollout")
    mats = weighted(attentions, attention_grads, graph)
    return graph.to_grid(propagate(graph, mats, _start(graph, mats[0].shape[0], mats[0]), "add"))


def weighted(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], graph: TokenGraph
             ) -> list[torch.Tensor]:
    """E_h[(∇A_l ⊙ A_l)⁺] per layer and sequence (N, nW, Nq, Nk)."""
    if len(gradients) != len(attentions):
        raise InputError(f"{len(attentions)} attention layers but {len(gradients)} gradients")
    out = []
    for i, (a, g) in enumerate(zip(attentions, gradients, strict=True)):
        if g.shape != a.shape:
            raise InputError(f"gradient {tuple(g.shape)} does not match attention {tuple(a.shape)}")
        out.append(per_sequence((g * a).clamp_min(0), graph.layers[i]).mean(dim=2))
    return out


@register_method("flow", "transformer", applies=no_attention_reason)
def flow(attentions: Sequence[torch.Tensor], token_graph: TokenGraph, *, head_fusion: str = "mean",
         max_edges: int = FLOW_MAX_EDGES) -> torch.Tensor:
    """Attention flow (Abnar & Zuidema, ACL 2020): max-flow from each patch to the CLS output (to the tokens a pooled
    head reads, each with its share); small models only."""
    graph = token_graph
    graph.check_composes("flow")
    if not graph.is_global:
        raise NotApplicableError("attention flow is a max-flow through the layers of one token set (Abnar & Zuidema "
                                 "2020); this model's attention is windowed or hierarchical, its token sets change "
                                 "between layers: rollout, grad-rollout, attention, chefer, attnlrp, legrad apply")
    if graph.reads_cls_only:
        return graph.to_grid(attention_flow(attentions, head_fusion, graph.cls, max_edges))
    return graph.to_grid(attention_flow(attentions, head_fusion, 0, max_edges, readout=graph.readout))


def _cls(layout: TokenLayout) -> int:
    if layout.cls is None:
        raise NotApplicableError("transformer maps read the CLS token's row, and this model has no CLS token")
    return layout.cls


def _check_attention(attn: torch.Tensor) -> None:
    if not isinstance(attn, torch.Tensor) or attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        shape = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise InputError(f"attention must be (B, heads, T, T), got {shape}")


def _checked_layers(attentions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    attentions = list(attentions)
    if not attentions:
        raise InputError("no attention layers given")
    for a in attentions:
        _check_attention(a)
        if a.shape[0] != attentions[0].shape[0] or a.shape[-1] != attentions[0].shape[-1]:
            raise InputError(f"attention layers disagree in shape: {tuple(attentions[0].shape)} vs {tuple(a.shape)}")
    return attentions
