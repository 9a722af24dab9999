"""LeGrad (Bousselham et al., ICCV 2025): how sensitive each layer's own class score is to that layer's attention.

For every attention layer l the token stream after its block is read out as the model reads its last
one (final norm + head: s_l), and E_l = mean over heads and queries of ReLU(∂s_l / ∂A_l); the map is
the mean of E_l over the layers, at the patch keys. One forward records every block's output and
attention; each ∂s_l / ∂A_l is one backward through block l's tail and the head only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import engine
from attnscope.explain.attention import explicit_attention, no_attention_reason
from attnscope.explain.context import Oracle
from attnscope.explain.method import register_method
from attnscope.explain.tokens import TokenLayout

POOLS = ("cls", "mean")


def readout(model: nn.Module, pool: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """tokens (N, T, D) → logits (N, classes) as the model reads its last block: timm's `forward_head`,
    torchvision's `encoder.ln` + `heads`, or a `norm` + `head` pair (TinyViT); `pool` picks CLS or the mean."""
    if pool not in POOLS:
        raise InputError(f"legrad pool must be one of {POOLS}, got {pool!r}")
    pooled = (lambda t: t[:, 0]) if pool == "cls" else (lambda t: t.mean(dim=1))
    encoder = getattr(model, "encoder", None)
    if callable(getattr(model, "forward_head", None)) and isinstance(getattr(model, "norm", None), nn.Module):
        return lambda t: model.forward_head(model.norm(t)) if pool == "cls" else model.head(
            model.fc_norm(model.norm(t).mean(dim=1)))
    if isinstance(getattr(encoder, "ln", None), nn.Module) and isinstance(getattr(model, "heads", None), nn.Module):
        return lambda t: model.heads(encoder.ln(t)[:, 0]) if pool == "cls" else model.heads(encoder.ln(t.mean(dim=1)))
    if isinstance(getattr(model, "norm", None), nn.Module) and isinstance(getattr(model, "head", None), nn.Module):
        return lambda t: model.head(pooled(model.norm(t)))
    raise NotApplicableError("legrad reads every layer's tokens through the model's head, and found none: it knows "
                             "timm ViTs (forward_head), torchvision ViTs (encoder.ln + heads) and norm + head")


def _blocks(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """The block around each attention layer (its parent module), whose output is the layer's token stream."""
    return [model.get_submodule(name.rpartition(".")[0]) for name in names]


def layer_sensitivities(oracle: Oracle, x: torch.Tensor, rows: torch.Tensor, pool: str) -> list[torch.Tensor]:
    """ReLU(∂s_l / ∂A_l) averaged over heads and queries (N, T) for every attention layer l, forward order."""
    head = readout(oracle.core, pool)
    target = oracle.target.take(rows)
    with explicit_attention(oracle.core) as layers:
        blocks = _blocks(oracle.core, [a.name for a in layers])
        attn: list[tuple[int, torch.Tensor]] = []
        outs: list[tuple[int, torch.Tensor]] = []
        with torch.enable_grad(), engine.recording_each([a.probe for a in layers], attn), \
                engine.recording_each(blocks, outs):
            engine.run_model(oracle.model, x.detach().requires_grad_())
            if len(attn) != len(layers) or len(outs) != len(blocks):
                raise NotApplicableError("legrad needs every attention layer and its block to run once per forward")
            found = dict(attn)
            sens = []
            for i, tokens in sorted(outs, key=lambda pair: pair[0]):
                score = target.score(head(tokens)).sum()
                (grad,) = torch.autograd.grad(score, found[i], retain_graph=True)
                sens.append(grad.clamp_min(0).mean(dim=(1, 2)))  # (N, T) per key token
    return sens


@register_method("legrad", "transformer", applies=no_attention_reason)
def legrad(images: torch.Tensor, token_layout: TokenLayout, oracle: Oracle, *, last: int | None = None,
           pool: str = "cls") -> torch.Tensor:
    """LeGrad (Bousselham et al., ICCV 2025, Eq. 4–6): (1/L) Σ_l mean_{heads, queries} ReLU(∂s_l / ∂A_l) at the
    patch keys, s_l the explained score of layer l's tokens read out by the model's head.

    `last`: only the last so many layers (None: all); `pool`: "cls" (the paper for CLS-token ViTs) or "mean"
    (mean over tokens before the final norm, as torchcam's LeGrad for torchvision ViTs).
    """
    rows = torch.arange(images.shape[0], device=images.device)
    sens = layer_sensitivities(oracle, images, rows, pool)
    if last is not None:
        if not 1 <= last <= len(sens):
            raise InputError(f"legrad last must be between 1 and {len(sens)} (the attention layers), got {last}")
        sens = sens[-last:]
    return token_layout.to_grid(torch.stack(sens).mean(dim=0))
