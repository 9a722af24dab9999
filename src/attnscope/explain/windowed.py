"""Attention of any layout on one image grid: global, windowed (Swin), gridded (MaxViT), hierarchical.

A ViT's layers all attend over one token set, so rollout is a product of (T, T) matrices. Windowed and
hierarchical models are not: a Swin layer attends within M × M windows of a cyclically shifted grid,
patch merging halves the grid between stages, LeViT subsamples its queries, SegFormer its keys. Here
every layer is placed on the image's token grid, which makes the products of `explain.transformer`
defined for all of them. The rule (docs/vit.md states it with its assumptions):

- a **space** is a token set: `prefix` extra tokens (CLS, registers) then an h × w grid in raster order;
- a layer's weights (B·nW, heads, Nq, Nk) are **scattered** into one (Tq, Tk) matrix Ã between its query
  and key spaces: sequence w's entry (i, j) goes to (pos_q[w, i], pos_k[w, j]), zero elsewhere — the
  positions undo the implementation's shift and partition (`explain.adapters.Geometry`);
- a layer whose query space is at least as large as its key space sits on the residual stream of its
  queries (Â = (Ã·D + I)/2, rows renormalised, as Abnar & Zuidema's residual rule); one whose queries
  are fewer (LeViT's subsampling attention) replaces the stream (Â = Ã);
- between spaces of different grids (patch merging, strided convolutions, SegFormer's reduced keys)
  relevance moves by area: a coarse token depends equally on the f × f fine tokens it covers
  (D[i, j] = 1/f² for j under i); convolutions and MLPs between attention layers are the identity,
  as rollout treats the MLP of a ViT;
- the product starts from the tokens the output reads (`readout`: the CLS token, or every token a
  pooled head averages) and is computed as a row vector, r ← r·Â_L ··· Â_1, one layer at a time, so a
  3136-token Swin stage costs O(T · N), not O(T³).

For a ViT (one global space) this is the rollout of Abnar & Zuidema (2020) exactly: the CLS row of
Â_L ··· Â_1. Between windows, cyclic shifts let relevance cross window borders from layer to layer,
which is the point of the shift (Liu et al., ICCV 2021).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import engine
from attnscope.explain.adapters import Geometry
from attnscope.explain.attention import AttentionLayer, explicit_attention
from attnscope.explain.tokens import TokenLayout, _grid, declared_prefix, detect_layout


@dataclass(frozen=True)
class Space:
    """`prefix` extra tokens, then an h × w `grid` of tokens in raster order."""

    prefix: int
    grid: tuple[int, int]

    @property
    def size(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class Placement:
    """Where one layer's sequences sit: its `windows` per image, query and key spaces, and each
    sequence's token positions in them (nW, Nq) and (nW, Nk)."""

    name: str
    windows: int
    queries: Space
    keys: Space
    q_index: torch.Tensor
    k_index: torch.Tensor

    @property
    def residual(self) -> bool:
        """Whether the layer sits on the residual stream of its queries (not a subsampling attention)."""
        return self.queries.size >= self.keys.size


@dataclass(frozen=True)
class TokenGraph:
    """Every attention layer of a pass placed on the image grid, and the tokens the output reads.

    `readout` (T_L,): weights over the last layer's query space, summing to 1; `cls`: the CLS index
    when the model has one; `composes`: None, or why products over the layers are not defined.
    """

    layers: tuple[Placement, ...]
    readout: torch.Tensor
    cls: int | None
    composes: str | None = None

    @property
    def is_global(self) -> bool:
        """One global space for every layer (a ViT): the (B, heads, T, T) weights are the layers' matrices."""
        first = self.layers[0].queries
        return all(p.windows == 1 and p.queries == first and p.keys == first for p in self.layers)

    @property
    def reads_cls_only(self) -> bool:
        return self.cls is not None and bool(self.readout[self.cls] == 1)

    def to_grid(self, scores: torch.Tensor, space: Space | None = None) -> torch.Tensor:
        """Scores over a space (B, T) → its grid (B, h, w), the extra tokens dropped."""
        space = space or self.input_space
        if scores.shape[-1] != space.size:
            raise InputError(f"{scores.shape[-1]} scores do not fit the space {space}")
        return scores[:, space.prefix :].reshape(scores.shape[0], *space.grid)

    @property
    def input_space(self) -> Space:
        """The space of the first layer's stream (its queries, or its keys for a subsampling attention)."""
        first = self.layers[0]
        return first.queries if first.residual else first.keys

    def layout(self) -> TokenLayout:
        """The `TokenLayout` of a ViT-like model (one global space); windowed models have none."""
        if not self.is_global:
            raise NotApplicableError("this model's attention is windowed or hierarchical: read `token_graph`")
        space = self.layers[-1].queries
        return TokenLayout(space.prefix, space.grid, self.cls)

    def check_composes(self, method: str) -> None:
        if self.composes is not None:
            raise NotApplicableError(f"{method} composes every attention layer into one product, and this model is "
                                     f"{self.composes}; `attention` (one layer's weights), `attnlrp` and the CAMs "
                                     "apply")


# --- placing one layer -------------------------------------------------------------------------------


def window_positions(grid: tuple[int, int], size: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """(nW, M·M) grid indices of Swin's windows: the grid rolled by −shift, cut into M × M windows, raster order."""
    (h, w), (m0, m1) = grid, size
    index = torch.arange(h * w).view(h, w).roll(shifts=(-shift[0], -shift[1]), dims=(0, 1))
    return index.view(h // m0, m0, w // m1, m1).permute(0, 2, 1, 3).reshape(-1, m0 * m1)


def grid_positions(grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(nW, G·G) grid indices of MaxViT's grid attention: sequence r holds tokens g·(h/G) + r of each axis."""
    (h, w), (g0, g1) = grid, size
    return torch.arange(h * w).view(g0, h // g0, g1, w // g1).permute(1, 3, 0, 2).reshape(-1, g0 * g1)


def place(name: str, geometry: Geometry, shape: Sequence[int], batch: int, model: nn.Module,
          size: tuple[int, int]) -> Placement:
    """Place one layer with weights of `shape` (B·nW, heads, Nq, Nk) for `batch` images of `size` (H, W)."""
    if shape[0] % batch:
        raise InputError(f"attention layer {name!r} gives {shape[0]} sequences for {batch} images")
    windows, nq, nk = shape[0] // batch, shape[-2], shape[-1]
    if not geometry.on_grid:
        raise NotApplicableError(f"attention layer {name!r} attends from {nq} queries that are no image tokens "
                                 "(object queries)")
    if geometry.kind == "global":
        if windows != 1:
            raise NotApplicableError(f"attention layer {name!r} runs {windows} sequences per image and its "
                                     "implementation declares no windows (explain.adapters)")
        queries, keys = _global_space(name, model, nq, size), _global_space(name, model, nk, size)
        return Placement(name, 1, queries, keys, torch.arange(nq)[None], torch.arange(nk)[None])
    if nq != nk:
        raise NotApplicableError(f"windowed attention layer {name!r} has {nq} queries and {nk} keys per window")
    grid = geometry.grid or _grid(windows * nq, size)
    if grid is None or grid[0] * grid[1] != windows * nq:
        raise NotApplicableError(f"attention layer {name!r}: {windows} windows of {nq} tokens are not a grid "
                                 f"of the {size[0]}×{size[1]} image (padded windows are not supported)")
    if geometry.kind == "window":
        if grid[0] % geometry.size[0] or grid[1] % geometry.size[1]:
            raise NotApplicableError(f"attention layer {name!r}: windows {geometry.size} do not tile the grid "
                                     f"{grid}; padded windows are not supported")
        index = window_positions(grid, geometry.size, geometry.shift)
    else:
        cells = geometry.size if geometry.size != (0, 0) else _grid(nq, size)
        if cells is None or grid[0] % cells[0] or grid[1] % cells[1]:
            raise NotApplicableError(f"attention layer {name!r}: a grid partition of {nq} tokens does not tile "
                                     f"the grid {grid}")
        index = grid_positions(grid, cells)
    if index.shape != (windows, nq):
        raise NotApplicableError(f"attention layer {name!r}: its geometry {geometry} gives {tuple(index.shape)} "
                                 f"positions for {windows} windows of {nq} tokens")
    space = Space(0, grid)
    return Placement(name, windows, space, space, index, index)


def _global_space(name: str, model: nn.Module, tokens: int, size: tuple[int, int]) -> Space:
    try:
        layout = detect_layout(model, tokens, size)
    except InputError as e:
        raise InputError(f"attention layer {name!r}: {e}") from None
    return Space(layout.prefix, layout.grid)


# --- moving a row vector through the layers --------------------------------------------------------


def transfer(r: torch.Tensor, source: Space, target: Space) -> torch.Tensor:
    """A row vector over `source` (B, S) as one over `target`: the same space as it is, a coarser grid spread
    evenly over the fine tokens each coarse token covers (r_fine[j] = r_coarse[parent(j)] / f²)."""
    if source == target:
        return r
    (h0, w0), (h1, w1) = source.grid, target.grid
    if source.prefix != target.prefix or h1 % h0 or w1 % w0:
        raise NotApplicableError(f"attention moves from a grid {target.grid} (+{target.prefix} tokens) to "
                                 f"{source.grid} (+{source.prefix}), which is no whole downsampling")
    fh, fw = h1 // h0, w1 // w0
    grid = r[:, source.prefix :].view(-1, h0, w0) / (fh * fw)
    fine = grid.repeat_interleave(fh, dim=1).repeat_interleave(fw, dim=2).reshape(r.shape[0], -1)
    return torch.cat([r[:, : source.prefix], fine], dim=1)


def through(r: torch.Tensor, a: torch.Tensor, p: Placement) -> torch.Tensor:
    """r·Ã for a row vector r (B, Tq) over the queries and a layer's weights a (B, nW, Nq, Nk): (B, Tk)."""
    b = r.shape[0]
    per_query = r[:, p.q_index.to(r.device)]  # (B, nW, Nq)
    with torch.autocast(r.device.type, enabled=False):  # in r's precision, also under the caller's autocast
        per_key = torch.einsum("bwi,bwij->bwj", per_query, a.to(r.dtype))  # (B, nW, Nk)
    out = torch.zeros(b, p.keys.size, dtype=r.dtype, device=r.device)
    return out.index_add_(1, p.k_index.to(r.device).flatten(), per_key.reshape(b, -1))


def propagate(graph: TokenGraph, matrices: Sequence[torch.Tensor], start: torch.Tensor, residual: str) -> torch.Tensor:
    """r ← r·Â_l from the last layer to the first; returns r over the input space (B, T_0).

    `matrices[l]` (B, nW, Nq, Nk) is layer l's Ã before scattering; `residual`: "rollout" — Â = (Ã + I)/2
    with rows renormalised (Abnar & Zuidema 2020) — or "add" — Â = I + Ã (Chefer et al. 2021).
    """
    r = start
    for i in range(len(graph.layers) - 1, -1, -1):
        p, a = graph.layers[i], matrices[i]
        if residual == "rollout" and p.residual:
            rows = torch.zeros(r.shape[0], p.queries.size, dtype=r.dtype, device=r.device)
            rows.index_add_(1, p.q_index.to(r.device).flatten(), a.sum(dim=-1).reshape(r.shape[0], -1).to(r.dtype))
            r = r / ((rows + 1) / 2)  # the rows of (Ã·D + I)/2 renormalised to 1
        c = through(r, a, p)
        if p.residual:
            c = transfer(c, p.keys, p.queries)
            r = (r + c) / 2 if residual == "rollout" else r + c
        else:
            r = c
        if i > 0:
            below = graph.layers[i - 1]
            r = transfer(r, p.queries if p.residual else p.keys, below.queries)
    return r


def at_layer(graph: TokenGraph, index: int) -> torch.Tensor:
    """The readout moved to layer `index`'s queries by the spaces alone (no attention): (T_q,)."""
    r = graph.readout[None]
    for i in range(len(graph.layers) - 1, index, -1):
        p = graph.layers[i]
        r = transfer(r, p.queries, graph.layers[i - 1].queries) if p.residual else \
            transfer(torch.full((1, p.keys.size), 1.0 / p.keys.size, dtype=r.dtype), p.keys,
                     graph.layers[i - 1].queries)
    return r[0]


def per_row(weights: Sequence[torch.Tensor], batch: int, k: int, grads: bool = False) -> tuple[torch.Tensor, ...]:
    """Each layer's (B·nW, ...) weights as one block of nW sequences per row (B·K·nW, ...), K rows per image;
    `grads`: the engine's gradients, which come (B·nW·K, ...), reordered the same way."""
    if k == 1:
        return tuple(weights)
    if grads:
        return tuple(g.view(batch, -1, k, *g.shape[1:]).transpose(1, 2).flatten(0, 2) for g in weights)
    return tuple(t.view(batch, -1, *t.shape[1:]).repeat_interleave(k, 0).flatten(0, 1) for t in weights)


def per_sequence(t: torch.Tensor, p: Placement) -> torch.Tensor:
    """A layer's (N·nW, heads, Nq, Nk) tensor as (N, nW, heads, Nq, Nk)."""
    return t.view(-1, p.windows, *t.shape[1:])


def key_scores(values: torch.Tensor, p: Placement) -> torch.Tensor:
    """Per-key values of each sequence (N, nW, Nk) summed into the key space (N, Tk)."""
    out = torch.zeros(values.shape[0], p.keys.size, dtype=values.dtype, device=values.device)
    return out.index_add_(1, p.k_index.to(values.device).flatten(), values.reshape(values.shape[0], -1))


# --- the graph of one pass --------------------------------------------------------------------------

_READOUT: weakref.WeakKeyDictionary[nn.Module, dict[tuple, torch.Tensor | None]] = weakref.WeakKeyDictionary()


def token_graph(model: nn.Module, layers: Sequence[AttentionLayer], capture: engine.Capture, images: torch.Tensor,
                output: object = None) -> TokenGraph:
    """The attention layers a pass recorded (`capture.probe_names`, in the order they ran) placed on the grid of
    `images`; `layers`: the pass's `AttentionLayer`s by which they are found."""
    by_name = {a.name: a for a in layers}
    layers = [by_name[n] for n in capture.probe_names]
    shapes, batch, size = [p.shape for p in capture.probes], images.shape[0], tuple(images.shape[-2:])
    composes = next((a.adapter.composes for a in layers if a.adapter is not None and a.adapter.composes), None)
    try:
        placed = tuple(place(a.name, a.probe.geometry or Geometry(), s, batch, model, size)
                       for a, s in zip(layers, shapes, strict=True))
    except (InputError, NotApplicableError) as e:
        if composes is None:
            raise
        raise NotApplicableError(f"this model is {composes}; its attention does not sit on the image grid ({e})"
                                 "; the CAMs and attnlrp apply") from None
    last = placed[-1].queries
    has_cls = last.prefix > 0 and declared_prefix(model)[1]
    cls = 0 if has_cls or (last.prefix == 1 and declared_prefix(model)[0] is None) else None
    mask = read_tokens(model, images, output)
    if mask is None or mask.shape[0] != last.size or not mask.any():
        mask = torch.zeros(last.size, dtype=torch.bool)
        if cls is not None:
            mask[cls] = True
        else:
            mask[last.prefix :] = True
    readout = mask.double() / mask.sum()
    return TokenGraph(placed, readout.to(images.device), cls, composes)


def read_tokens(model: nn.Module, images: torch.Tensor, output: object = None) -> torch.Tensor | None:
    """Which of the last attention layer's query tokens the output reads: a mask over its space (T_q,), found by
    one backward from a random projection of the output of one image (cached per model and input size);
    None when the output is not a tensor."""
    key = (tuple(images.shape[1:]), repr(output))
    cache = _READOUT.setdefault(model, {})
    if key not in cache:
        cache[key] = _trace_readout(model, images[:1], output)
    return cache[key]


def _trace_readout(model: nn.Module, x: torch.Tensor, output: object) -> torch.Tensor | None:
    seen: list[tuple[int, torch.Tensor]] = []
    with torch.enable_grad(), engine.model_guard(model), explicit_attention(model) as layers, \
            engine.recording_each([a.probe for a in layers], seen):
        out = engine.select_output(engine.run_model(model, x.detach().requires_grad_()), output)
        if not isinstance(out, torch.Tensor) or not seen or not out.requires_grad:
            return None
        index, weights = seen[-1]  # the last layer to run
        projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
        (grad,) = torch.autograd.grad((out * projection).sum(), weights, allow_unused=True)
    if grad is None:
        return None
    layer = layers[index]
    p = place(layer.name, layer.probe.geometry or Geometry(), tuple(weights.shape), 1, model, tuple(x.shape[-2:]))
    read = grad.abs().sum(dim=(1, 3)).view(p.windows, -1) > 0  # (nW, Nq): queries whose output reaches y
    mask = torch.zeros(p.queries.size, dtype=torch.bool)
    mask[p.q_index.flatten()] = read.flatten().cpu()
    return mask
