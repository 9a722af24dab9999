"""Parity with the reference implementation of Chefer et al.'s rules (hila-chefer/Transformer-MM-Explainability).

The reference code is ported here, in the test only, from two places of that repository:
- `CLIP_explainability.ipynb`, `interpret()`: the bi-modal rule on a dual encoder, image and text relevance;
- `DETR/modules/ExplanationGenerator.py`, `Generator.generate_ours(use_lrp=False)` with `avg_heads`,
  `apply_self_attention_rules`, `apply_mm_attention_rules` and `handle_residual`: the encoder–decoder rule.
The attention weights and their gradients are collected by this test's own hooks (each attention's softmax
module, with the explicit path switched on by hand), not by attnscope's engine; models are random, float64.
"""

from __future__ import annotations

import torch

import attnscope as ats
from attnscope import models
from attnscope.data import DigitScenes
from attnscope.explain.multimodal import Caption, captioner
from attnscope.explain.text import Text
from attnscope.explain.text_tokens import explain_tokens
from attnscope.models.tiny_transformer import Attention

VOCAB = DigitScenes.vocabulary().to_json()
SMALL = dict(image_size=32, patch_size=8, dim=16, depth=3, heads=2)
TOL = dict(rtol=1e-5, atol=1e-5)


# --- the reference, ported (CLIP_explainability.ipynb and DETR/modules/ExplanationGenerator.py) -------------------

def ref_avg_heads(cam, grad):
    cam = cam.reshape(-1, cam.shape[-2], cam.shape[-1])
    grad = grad.reshape(-1, grad.shape[-2], grad.shape[-1])
    cam = grad * cam
    cam = cam.clamp(min=0).mean(dim=0)
    return cam


def ref_apply_self_attention_rules(R_ss, R_sq, cam_ss):  # noqa: N803 (the reference's names)
    R_sq_addition = torch.matmul(cam_ss, R_sq)  # noqa: N806
    R_ss_addition = torch.matmul(cam_ss, R_ss)  # noqa: N806
    return R_ss_addition, R_sq_addition


def ref_handle_residual(orig_self_attention):
    self_attention = orig_self_attention.clone()
    diag_idx = range(self_attention.shape[-1])
    self_attention -= torch.eye(self_attention.shape[-1], dtype=self_attention.dtype)
    assert self_attention[diag_idx, diag_idx].min() >= 0
    self_attention = self_attention / self_attention.sum(dim=-1, keepdim=True)
    self_attention += torch.eye(self_attention.shape[-1], dtype=self_attention.dtype)
    return self_attention


def ref_apply_mm_attention_rules(R_ss, R_qq, cam_sq):  # noqa: N803
    R_ss_normalized = ref_handle_residual(R_ss)  # noqa: N806
    R_qq_normalized = ref_handle_residual(R_qq)  # noqa: N806
    R_sq_addition = torch.matmul(R_ss_normalized.t(), torch.matmul(cam_sq, R_qq_normalized))  # noqa: N806
    R_sq_addition[torch.isnan(R_sq_addition)] = 0
    return R_sq_addition


def ref_generate_ours(encoder, decoder, target_index):
    """`Generator.generate_ours(use_lrp=False)`; `encoder`: [(attn, grad)], `decoder`: [((attn, grad) self,
    (attn, grad) cross)], each (1, heads, Tq, Tk), for the one-hot of query `target_index`'s output."""
    image_bboxes, queries_num = encoder[0][0].shape[-1], decoder[0][0][0].shape[-1]
    R_i_i = torch.eye(image_bboxes, image_bboxes, dtype=torch.float64)  # noqa: N806
    R_q_q = torch.eye(queries_num, queries_num, dtype=torch.float64)  # noqa: N806
    R_q_i = torch.zeros(queries_num, image_bboxes, dtype=torch.float64)  # noqa: N806
    for attn, grad in encoder:  # handle_self_attention_image
        cam = ref_avg_heads(attn, grad)
        R_i_i += torch.matmul(cam, R_i_i)  # noqa: N806
    for (attn, grad), (cattn, cgrad) in decoder:
        cam = ref_avg_heads(attn, grad)  # handle_co_attn_self_query
        R_q_q_add, R_q_i_add = ref_apply_self_attention_rules(R_q_q, R_q_i, cam)  # noqa: N806
        R_q_q += R_q_q_add  # noqa: N806
        R_q_i += R_q_i_add  # noqa: N806
        cam_q_i = ref_avg_heads(cattn, cgrad)  # handle_co_attn_query
        R_q_i += ref_apply_mm_attention_rules(R_q_q, R_i_i, cam_q_i)  # noqa: N806
    return R_q_i[target_index]


def ref_interpret_relevance(blocks, start_layer=0):
    """`interpret()`'s loop for one tower: blocks [(attn (n, heads, T, T), grad)] → R (n, T, T)."""
    n, t = blocks[0][0].shape[0], blocks[0][0].shape[-1]
    R = torch.eye(t, t, dtype=blocks[0][0].dtype).unsqueeze(0).expand(n, t, t)  # noqa: N806
    for i, (attn, grad) in enumerate(blocks):
        if i < start_layer:
            continue
        cam = attn.reshape(-1, attn.shape[-1], attn.shape[-1])
        grad = grad.reshape(-1, grad.shape[-1], grad.shape[-1])
        cam = grad * cam
        cam = cam.reshape(n, -1, cam.shape[-1], cam.shape[-1])
        cam = cam.clamp(min=0).mean(dim=1)
        R = R + torch.bmm(cam, R)  # noqa: N806
    return R


# --- this test's own hooks -------------------------------------------------------------------------------------

class Recorder:
    """Explicit attention in every `Attention` of `module`, its weights recorded in forward order."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, Attention)]
        self.weights: list[torch.Tensor] = []

    def __enter__(self) -> Recorder:
        for m in self.layers:
            m.fused_attn = False
        self.handles = [m.softmax.register_forward_hook(lambda _m, _i, out: self.weights.append(out))
                        for m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for m, h in zip(self.layers, self.handles, strict=True):
            m.fused_attn = True
            h.remove()


def test_chefer_mm_on_a_dual_encoder_equals_the_clip_notebooks_interpret() -> None:
    torch.manual_seed(0)
    model = models.get("clip-tiny", vocab=VOCAB, text_dim=16, text_depth=2, text_heads=2, embed_dim=8,
                       **SMALL).double().eval()
    texts = ["a red three", "a blue seven left of a green two"]
    image = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for start_layer in (0, 2):  # the notebook's default start_layer = -1 is the last of 3 layers
        ours = ats.explain(model, image, "chefer-mm", targets=Text(texts),
                           options={"chefer-mm": {"start_layer": start_layer}})["chefer-mm"].lowres  # (1, K, 4, 4)
        tokens = explain_tokens(model, image, Text(texts), "chefer-mm",
                                {"chefer-mm": {"start_layer": start_layer}})["chefer-mm"]
        ids = model.tokenize(texts)
        images = image.repeat(len(texts), 1, 1, 1)  # interpret(): the image once per text, one-hot on the diagonal
        with Recorder(model.visual) as seen, Recorder(model.text) as seen_text:
            logits_per_image = model(images, ids)
            one_hot = torch.zeros_like(logits_per_image)
            one_hot[torch.arange(len(texts)), torch.arange(len(texts))] = 1
            score = (one_hot * logits_per_image).sum()
            grads = torch.autograd.grad(score, seen.weights + seen_text.weights)
        n_image = len(seen.weights)
        r = ref_interpret_relevance(list(zip(seen.weights, grads[:n_image], strict=True)), start_layer)
        image_relevance = r[:, 0, 1:].detach().view(len(texts), 4, 4)
        torch.testing.assert_close(ours[0], image_relevance, **TOL)
        r_text = ref_interpret_relevance(list(zip(seen_text.weights, grads[n_image:], strict=True)), start_layer)
        eot = model.text_positions(ids)
        for k in range(len(texts)):
            ref_row = r_text[k, eot[k], : int(eot[k]) + 1].detach()
            torch.testing.assert_close(tokens.values[0, k, : int(eot[k]) + 1], ref_row, **TOL)


def test_chefer_mm_on_an_encoder_decoder_equals_the_detr_generator() -> None:
    torch.manual_seed(1)
    model = models.get("captioner-tiny", vocab=VOCAB, decoder_depth=2, max_len=12, **SMALL).double().eval()
    image = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    caption = "a red three left of a blue two"
    reference = {"chefer-mm": {"residual": "reference"}}  # the authors' 0/0 in eq. 9 kept (see below)
    ours = ats.explain(model, image, "chefer-mm", targets=Caption([caption]), options=reference)["chefer-mm"]
    ours = ours.lowres[0]  # (T, 4, 4)
    safe = ats.explain(model, image, "chefer-mm", targets=Caption([caption]))["chefer-mm"].lowres[0]
    ids = torch.tensor(captioner(model).encode(caption))[None]
    steps = ids.shape[1] - 1
    # In a causal decoder the positions after token t get no gradient from its score: their rows of R^{tt} − I are
    # 0, eq. 9 divides 0 by 0, and the reference zeroes every entry the NaN reaches — all of them, for every token
    # but the last. "safe" keeps those rows at 0 instead; where the reference has no 0/0 (the last token) both agree.
    assert all(float(ours[t].abs().max()) == 0 for t in range(steps - 1)) and float(ours[-1].abs().max()) > 0
    assert all(float(safe[t].abs().max()) > 0 for t in range(steps))
    torch.testing.assert_close(safe[-1], ours[-1], **TOL)
    for t in range(steps):
        with Recorder(model) as seen:
            logits = model(image, ids).logits  # (1, T, V)
            one_hot = torch.zeros_like(logits)
            one_hot[0, t, ids[0, t + 1]] = 1
            grads = torch.autograd.grad((one_hot * logits).sum(), seen.weights)
        pairs = [(a.detach(), g) for a, g in zip(seen.weights, grads, strict=True)]
        encoder, decoder = pairs[: SMALL["depth"]], pairs[SMALL["depth"] :]
        ref = ref_generate_ours(encoder, [(decoder[i], decoder[i + 1]) for i in range(0, len(decoder), 2)], t)
        torch.testing.assert_close(ours[t], ref.view(4, 4), **TOL)
