"""LeGrad (Bousselham et al., ICCV 2025): how sensitive each layer's own class score is to that layer's attention.

For every attention layer l the token stream after its block is read out as the model reads its last
one (s_l), and E_l = mean over heads and queries of ReLU(∂s_l / ∂A_l); the map is the mean of E_l over
the layers, at the keys, placed on the grid (`explain.windowed`: windows scattered back). "As the model
reads its last one" is the model's own head: one forward in which the last block's output is replaced by
the streams of every layer, stacked (L·N rows), so whatever follows the last block — final norm,
pooling, projection, classifier, of any library — reads each of them. The layers are those whose block
outputs a stream of the last block's shape (a hierarchical model: its last stage; earlier stages have
another width the head cannot read). Each ∂s_l / ∂A_l is one backward through block l's tail and the head.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import engine
from attnscope.explain.attention import explicit_attention, no_attention_reason
from attnscope.explain.context import Oracle, OwnPass
from attnscope.explain.engine import Capture
from attnscope.explain.method import register_method
from attnscope.explain.run import logits_of, select_output
from attnscope.explain.targets import TargetSpec, resolve
from attnscope.explain.windowed import TokenGraph, key_scores, per_sequence, read_tokens, token_graph
from attnscope.modules import unwrap

POOLS = ("model", "cls", "mean")


def readout(model: nn.Module, pool: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """tokens (N, T, D) → logits with `pool` "cls" or "mean" before the head: timm's `forward_head`, torchvision's
    `encoder.ln` + `heads`, or a `norm` + `head` pair (TinyViT) — torchcam's LeGrad pools the mean this way."""
    pooled = (lambda t: t[:, 0]) if pool == "cls" else (lambda t: t.mean(dim=1))
    encoder = getattr(model, "encoder", None)
    if callable(getattr(model, "forward_head", None)) and isinstance(getattr(model, "norm", None), nn.Module):
        return lambda t: model.forward_head(model.norm(t)) if pool == "cls" else model.head(
            model.fc_norm(model.norm(t).mean(dim=1)))
    if isinstance(getattr(encoder, "ln", None), nn.Module) and isinstance(getattr(model, "heads", None), nn.Module):
        return lambda t: model.heads(encoder.ln(t)[:, 0]) if pool == "cls" else model.heads(encoder.ln(t.mean(dim=1)))
    if isinstance(getattr(model, "norm", None), nn.Module) and isinstance(getattr(model, "head", None), nn.Module):
        return lambda t: model.head(pooled(model.norm(t)))
    raise NotApplicableError(f"legrad pool={pool!r} reads tokens through a known head (timm's forward_head, "
                             "torchvision's encoder.ln + heads, norm + head); pool='model' reads any model's own")


def blocks(model: nn.Module, names: list[str]) -> list[list[nn.Module]]:
    """For each attention layer, its ancestors that hold no other attention layer, nearest first."""
    out = []
    for name in names:
        parts, chain = name.split("."), []
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if sum(n == prefix or n.startswith(prefix + ".") for n in names) > 1:
                break
            chain.append(model.get_submodule(prefix))
        out.append(chain)
    return out


def _first(t: object) -> torch.Tensor | None:
    if isinstance(t, torch.Tensor):
        return t
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], torch.Tensor):
        return t[0]
    return None


def _replaced(output: object, tokens: torch.Tensor) -> object:
    return tokens if isinstance(output, torch.Tensor) else (tokens, *output[1:])


def layer_sensitivities(oracle: Oracle, x: torch.Tensor, rows: torch.Tensor, pool: str, graph: TokenGraph,
                        own: tuple | None = None) -> list[tuple[int, torch.Tensor]]:
    """(layer index, ReLU(∂s_l / ∂A_l) averaged over heads and queries (N, T_k)) for each layer of the last stage.

    With the model's own head (pool "model") the last block's output is replaced, in the very forward that
    records the attention, by every chosen layer's stream stacked: one forward in all. Where that cannot be
    (the last block is not the outermost module of its chain, the head fails on the stack), the forward runs
    plain and the head reads the streams in a second pass (`_scores`). `own`: (attention layers, what `_forward`
    returned) where that forward already ran as the call's shared pass (`own_forward`).
    """
    if pool not in POOLS:
        raise InputError(f"legrad pool must be one of {POOLS}, got {pool!r}")
    head = None if pool == "model" else readout(oracle.core, pool)
    target = oracle.target.take(rows)
    with ExitStack() as stack:
        stack.enter_context(torch.enable_grad())
        if own is not None:  # the call's shared pass was this method's own forward (`own_forward`)
            layers, (attn, found, out, leaves) = own
        else:
            layers = stack.enter_context(explicit_attention(oracle.core))
            attn, found, out, leaves = _forwards(oracle.model, oracle.output, x, layers, lambda _attn: graph,
                                                 head is None)
        if found[-1] is None:
            raise NotApplicableError(f"legrad reads the token stream after each attention layer's block, and found "
                                     f"no residual block around the last one, {layers[attn[-1][0]].name!r}")
        chosen = _chosen(found, graph)
        if leaves is not None:
            scores = target.take(rows.repeat(len(chosen))).score(out)
        else:
            leaves = [found[k][1].detach().requires_grad_() for k in chosen]  # s_l reads only its own stream
            if head is None:
                scores = _scores(oracle, x, found[-1][0], found[-1][1], leaves, target, rows)
            else:
                scores = target.take(rows.repeat(len(chosen))).score(head(torch.cat(leaves)))
        reads = torch.autograd.grad(scores.sum(), leaves)  # ∂s_l/∂stream_l for every l: one backward of the head
        sens = []
        for k, read in zip(chosen, reads, strict=True):  # then block l's tail alone, not the later blocks
            (grad,) = torch.autograd.grad(found[k][1], attn[k][1], read, retain_graph=True)
            p = graph.layers[k]
            per_key = per_sequence(grad.clamp_min(0), p).mean(dim=2).sum(dim=2)  # (N, nW, Nk): over queries
            sens.append((k, key_scores(per_key, p) / (p.windows * grad.shape[-2])))
        del out
    return sens


class _Unstackable(Exception):
    """The stacked streams were put in the forward and did not come out as one output per stream."""


def _forwards(model: nn.Module, output: object, x: torch.Tensor, layers: list, graph: Callable[[list], TokenGraph],
              stacking: bool) -> tuple[list, list, object, list[torch.Tensor] | None]:
    """`_forward`, stacking where asked and where the stack passes through the head; else a plain forward (the
    head then reads the streams in `_scores`). Inside `explicit_attention` and with gradients enabled."""
    chains = blocks(unwrap(model), [a.name for a in layers])
    try:
        return _forward(model, output, x, layers, chains, graph, stacking)
    except _Unstackable:  # the stack did not pass through the head: a plain forward, then the head (`_scores`)
        return _forward(model, output, x, layers, chains, graph, False)


def own_forward(model: nn.Module, images: torch.Tensor, targets: TargetSpec, output: object,
                options: dict) -> OwnPass | None:
    """LeGrad's forward with gradients as the call's shared pass (`Method.own_pass`): with the model's own head
    (pool "model") the forward that records the attention and stacks every layer's stream already gives the model's
    output (the last layer's rows), so the targets are resolved from it and no separate pass runs."""
    if options.get("pool", "model") != "model":
        return None
    core = unwrap(model)
    read_tokens(core, images, output)  # which tokens the head reads: traced now (cached), not inside the forward

    def graph(attn: list) -> TokenGraph:  # the token graph of the attention that has run, from its shapes
        return token_graph(core, layers, _Ran(attn, layers), images, output)

    with explicit_attention(core) as layers, torch.enable_grad():
        attn, found, out, leaves = state = _forwards(model, output, images, layers, graph, True)
    raw = out if leaves is None else out[-images.shape[0]:]  # stacked: the last layer's rows are the model's output
    logits = logits_of(select_output(raw, output) if leaves is None else raw, images.shape[0])
    if not isinstance(logits, torch.Tensor):
        return None
    target, table, k = resolve(targets, logits.detach())
    capture = Capture(logits=logits.detach(), scores=target.score(logits.detach()), table=table, per_image=k,
                      probes=tuple(a.detach() for _, a in attn), probe_names=tuple(layers[i].name for i, _ in attn))
    return OwnPass(capture, target, layers, (layers, state))


@dataclass(frozen=True)
class _Ran:
    """What `token_graph` reads of a capture, from the attention that has run: (index, weights) pairs."""

    attn: list
    layers: list

    @property
    def probes(self) -> tuple[torch.Tensor, ...]:
        return tuple(a for _, a in self.attn)

    @property
    def probe_names(self) -> tuple[str, ...]:
        return tuple(self.layers[i].name for i, _ in self.attn)


def _forward(model: nn.Module, output: object, x: torch.Tensor, layers: list, chains: list[list[nn.Module]],
             graph: Callable[[list], TokenGraph], stacking: bool) -> tuple[list, list, object, list | None]:
    """One forward with grad: (the attention in the order it ran, each one's block and stream (`_stream`), the
    model's output, the stacked leaves or None). `stacking`: the outermost module of the last layer's chain
    outputs, once, the chosen streams as leaves stacked, if it is that layer's stream module and the last to run;
    the output is then the explained output of every stream (N·L rows), or _Unstackable is raised. `graph(attn)`:
    the token graph of the attention that ran."""
    attn: list[tuple[int, torch.Tensor]] = []
    seen: dict[int, tuple[tuple, torch.Tensor]] = {}
    state: dict[str, object] = {}

    def stack(module: nn.Module, _inputs: tuple, output: object) -> object:
        if "leaves" in state or not attn or attn[-1][0] != len(layers) - 1:
            return None
        found = [_stream(chains[i], seen) for i, _ in attn]
        if found[-1] is None or found[-1][0] is not module:
            return None
        state["leaves"] = [found[k][1].detach().requires_grad_() for k in _chosen(found, graph(attn))]
        state["ran"] = len(attn)
        return _replaced(output, torch.cat(state["leaves"]))

    hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(id(m), (_shape(i), _first(o))))
             for chain in chains for m in chain]
    if stacking and chains[-1]:
        hooks.append(chains[-1][-1].register_forward_hook(stack))
    try:
        with engine.recording_each([a.probe for a in layers], attn):
            out = engine.run_model(model, x.detach().requires_grad_())
        if "leaves" in state:
            out = engine.select_output(out, output)
    except (RuntimeError, InputError, NotApplicableError) as e:
        if "leaves" in state:
            raise _Unstackable from e
        raise
    finally:
        for h in hooks:
            h.remove()
    leaves = state.get("leaves")
    if leaves is not None and (state["ran"] != len(attn) or not isinstance(out, torch.Tensor)
                               or out.shape[0] != x.shape[0] * len(leaves)):  # attention ran on the stack, a head
        raise _Unstackable  # that mixes the rows
    return attn, [_stream(chains[i], seen) for i, _ in attn], out, leaves


def _chosen(found: list, graph: TokenGraph) -> list[int]:
    """The layers (positions in the order they ran) whose stream has the last one's shape and keys."""
    last, keys = found[-1][1], graph.layers[-1].keys
    return [k for k, f in enumerate(found)
            if f is not None and f[1].shape == last.shape and graph.layers[k].keys == keys]


def _shape(inputs: tuple) -> tuple:
    first = _first(inputs)
    return tuple(first.shape) if first is not None else ()


def _stream(chain: list[nn.Module], seen: dict) -> tuple[nn.Module, torch.Tensor] | None:
    """The token stream after an attention layer's block: the output of its outermost ancestor that holds no
    other attention layer and keeps its input's shape (a residual block), else of its outermost such ancestor
    (a block that downsamples as it starts a stage); None if none outputs a tensor."""
    ran = [(m, seen[id(m)]) for m in reversed(chain) if id(m) in seen and seen[id(m)][1] is not None]
    for module, (shape, out) in ran:
        if shape == tuple(out.shape):
            return module, out
    return (ran[0][0], ran[0][1][1]) if ran else None


def _scores(oracle: Oracle, x: torch.Tensor, block: nn.Module, last: torch.Tensor, streams: list[torch.Tensor],
            target, rows: torch.Tensor) -> torch.Tensor:
    """s_l of every stream (L·N,): one rerun on the streams stacked, or one per stream where what follows the last
    block cannot take them stacked (a multi-scale head, which also reads earlier stages)."""
    n = x.shape[0]
    try:
        return target.take(rows.repeat(len(streams))).score(_tail(oracle, x, block, last, torch.cat(streams),
                                                                  n * len(streams)))
    except NotApplicableError:
        if len(streams) == 1:
            raise
    return torch.cat([target.score(_tail(oracle, x, block, last, s, n)) for s in streams])


def _tail(oracle: Oracle, x: torch.Tensor, block: nn.Module, last: torch.Tensor, stacked: torch.Tensor,
          rows: int) -> torch.Tensor:
    """The model's output (`rows` of them) when its last block outputs `stacked` (L streams) instead of `last`."""
    handle = block.register_forward_hook(lambda _m, _i, o: _replaced(o, stacked) if _first(o).shape == last.shape
                                         else None)
    try:
        out = engine.select_output(engine.run_model(oracle.model, x), oracle.output)
    except (RuntimeError, InputError) as e:
        raise NotApplicableError("legrad reads every layer's stream through what follows the last block, and what "
                                 "follows this model's last block does not run on the streams of several layers "
                                 f"stacked ({str(e).splitlines()[0][:80]})") from e
    finally:
        handle.remove()
    if not isinstance(out, torch.Tensor) or out.shape[0] != rows:
        raise NotApplicableError("legrad reads every layer's stream through what follows the last block, and this "
                                 "model's head does not give one output per stream")
    return out


@register_method("legrad", "transformer", applies=no_attention_reason, own_pass=own_forward)
def legrad(images: torch.Tensor, token_graph: TokenGraph, oracle: Oracle, own_pass: tuple | None, *,
           last: int | None = None, pool: str = "model") -> torch.Tensor:
    """LeGrad (Bousselham et al., ICCV 2025, Eq. 4–6): (1/L) Σ_l mean_{heads, queries} ReLU(∂s_l / ∂A_l) at the keys,
    s_l the explained score of layer l's stream read out by the model's own head.

    `last`: only the last so many layers (None: all of the last stage); `pool`: "model" (the model's own head,
    whatever it pools), or "cls" / "mean" before a known head (torchcam's LeGrad pools the mean).
    """
    rows = torch.arange(images.shape[0], device=images.device)
    sens = layer_sensitivities(oracle, images, rows, pool, token_graph, own_pass)
    if last is not None:
        if not 1 <= last <= len(sens):
            raise InputError(f"legrad last must be between 1 and {len(sens)} (the attention layers), got {last}")
        sens = sens[-last:]
    space = token_graph.layers[sens[-1][0]].keys
    return token_graph.to_grid(torch.stack([s for _, s in sens]).mean(dim=0), space)
