"""Image–text models: text-conditioned maps of a dual encoder, per-token maps of a captioner, token relevance.

Tiny random models (clip-tiny, captioner-tiny at 32 px) in float64, so that two code paths that compute the
same numbers agree to rounding: K texts in one batched backward == K calls of one text; T tokens == T calls;
Grad-CAM of a text == the same formula written with autograd here; the captioner's own α == `cross-attention`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attnscope as ats
from attnscope import models
from attnscope.data import DigitScenes
from attnscope.errors import InputError, NotApplicableError
from attnscope.explain.multimodal import Caption, TeacherForced, captioner
from attnscope.explain.text import Text
from attnscope.explain.text_tokens import explain_tokens
from attnscope.maps import SequenceMap

VOCAB = DigitScenes.vocabulary().to_json()
TEXTS = ["a red three", "a blue seven", "a green two left of a red one"]
SMALL = dict(image_size=32, patch_size=8, dim=16, depth=2, heads=2)


def _clip() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.get("clip-tiny", vocab=VOCAB, text_dim=16, text_depth=2, text_heads=2, embed_dim=8,
                      **SMALL).double()


def _captioner() -> torch.nn.Module:
    torch.manual_seed(1)
    return models.get("captioner-tiny", vocab=VOCAB, decoder_depth=2, max_len=10, **SMALL).double()


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * float(b.abs().max().clamp_min(1)))


DUAL_METHODS = ["gradcam", "attention", "rollout", "grad-rollout", "chefer-mm", "chefer", "legrad", "attnlrp",
                "saliency", "ig"]


def test_text_targets_give_one_map_per_image_and_prompt_equal_to_one_prompt_at_a_time() -> None:
    model, x = _clip(), _images()
    opts = {"gradcam": {"relu": False}, "ig": {"steps": 4}}
    out = ats.explain(model, x, DUAL_METHODS, targets=Text(TEXTS), options=opts)
    with torch.no_grad():
        logits = model.eval()(x, model.tokenize(TEXTS))
    _close(out.logits, logits)  # the explained scores are the model's own image–text logits
    for name in DUAL_METHODS:
        assert out[name].values.shape == (2, 3, 32, 32)
        assert out[name].meta["texts"] == TEXTS
    for k, text in enumerate(TEXTS):
        one = ats.explain(model, x, DUAL_METHODS, targets=Text([text]), options=opts)
        for name in DUAL_METHODS:
            _close(out[name].values[:, k], one[name].values[:, 0])


def test_gradcam_of_a_text_equals_the_formula_written_with_autograd() -> None:
    """Grad-CAM (Selvaraju et al. 2017) at the input of the last attention: ReLU(Σ_c mean_ij(∂s_k/∂A_c) · A_c)."""
    model, x = _clip().eval(), _images()
    out = ats.explain(model, x, "gradcam", targets=Text(TEXTS))
    assert out["gradcam"].layer == "tower.blocks.1.norm1"
    store = []
    handle = model.visual.blocks[1].norm1.register_forward_hook(lambda m, i, o: store.append(o))
    try:
        with torch.enable_grad():
            scores = model(x, model.tokenize(TEXTS))  # (B, K)
    finally:
        handle.remove()
    acts = store[0][:, 1:].transpose(1, 2).reshape(2, 16, 4, 4)  # patches as (B, C, 4, 4)
    for k in range(len(TEXTS)):
        (grad,) = torch.autograd.grad(scores[:, k].sum(), store[0], retain_graph=True)
        grad = grad[:, 1:].transpose(1, 2).reshape(2, 16, 4, 4)
        cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * acts).sum(1))
        _close(out["gradcam"].lowres[:, k], cam.detach())


def test_chefer_mm_on_an_image_tower_is_gradient_weighted_rollout_and_respects_start_layer() -> None:
    model, x = _clip(), _images()
    out = ats.explain(model, x, ["chefer-mm", "grad-rollout"], targets=Text(TEXTS))
    _close(out["chefer-mm"].values, out["grad-rollout"].values)
    last = ats.explain(model, x, "chefer-mm", targets=Text(TEXTS), options={"chefer-mm": {"start_layer": -1}})
    assert not torch.allclose(last["chefer-mm"].values, out["chefer-mm"].values)


def test_text_targets_leave_the_dual_encoder_as_found_and_refuse_what_does_not_fit() -> None:
    model, x = _clip(), _images()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ats.explain(model, x, ["gradcam", "chefer-mm"], targets=Text(TEXTS))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(InputError):
        Text([])
    with pytest.raises(InputError):
        Text("a red three")
    with pytest.raises(NotApplicableError):
        ats.explain(_captioner(), x, "gradcam", targets=Text(TEXTS))


def test_per_token_maps_from_one_batched_backward_equal_one_call_per_token() -> None:
    model, x = _captioner(), _images(1)
    found = captioner(model)
    ids = torch.tensor(found.encode("a red three left of a blue two"))
    bound = TeacherForced(found, ids, "logit")
    methods = ["gradcam", "chefer-mm", "cross-attention", "saliency", "attnlrp"]
    steps = len(ids) - 1
    every = ats.explain(bound, x, methods, targets=torch.arange(steps)[None])
    for t in range(steps):
        one = ats.explain(bound, x, methods, targets=torch.tensor([[t]]))
        for name in methods:
            _close(every[name].values[:, t], one[name].values[:, 0])


def test_caption_targets_give_sequence_maps_with_the_words() -> None:
    model, x = _captioner(), _images()
    captions = ["a red three left of a blue two", "a green one"]
    out = ats.explain(model, x, ["gradcam", "cross-attention", "chefer-mm"], targets=Caption(captions))
    seq = out["gradcam"]
    assert isinstance(seq, SequenceMap) and seq.values.shape == (2, 9, 32, 32)
    assert seq.words == [c.split() for c in captions]
    assert seq.mask.sum(1).tolist() == [9, 4]  # the words and <end>; padding after the shorter caption
    assert out.logits.shape == (2, 9) and (out.logits[1, 4:] == 0).all()
    with torch.no_grad():  # the explained scores are the teacher-forced logits of the caption's tokens
        ids = torch.tensor(captioner(model).encode(captions[0]))
        logits = model.eval()(x[:1], ids[None]).logits[0]
    _close(out.logits[0], logits.gather(1, ids[1:, None])[:, 0])


def test_cross_attention_is_the_captioners_own_alpha() -> None:
    """captioner-tiny's α (what `sat` reads) is the last cross-attention, heads averaged: the same numbers."""
    model, x = _captioner(), _images()
    captions = ["a red three left of a blue two", "a green one"]
    out = ats.explain(model, x, ["cross-attention", "sat"], targets=Caption(captions),
                      options={"sat": {"captions": captions}})
    cross, own = out["cross-attention"], out["sat"]
    mask = cross.mask
    torch.testing.assert_close(cross.lowres[mask].float(), own.lowres[:, : mask.shape[1]][mask])  # sat is float32
    sums = cross.lowres.sum(dim=(2, 3))[mask]
    _close(sums, torch.ones_like(sums))


def test_a_captioner_without_targets_explains_the_caption_it_generates() -> None:
    model, x = _captioner(), _images()
    out = ats.explain(model, x, ["gradcam", "sat"])
    assert out["gradcam"].words == out["sat"].words
    generated = model.eval().caption(x).tokens
    assert out["gradcam"].words[0] == [model.vocab.itos[int(i)] for i in generated[0] if int(i) > 3]


def test_token_relevance_ig_is_complete_and_chefer_reads_the_end_token() -> None:
    model, x = _clip().eval(), _images()
    out = explain_tokens(model, x, Text(TEXTS), ["ig", "inputxgrad", "chefer-mm", "attention", "attnlrp"],
                         {"ig": {"steps": 256}})
    ids = model.tokenize(TEXTS)
    with torch.no_grad():
        scores = model(x, ids)
        image = F.normalize(model.encode_image(x), dim=-1)
        zero = model.encode_text_embedded(torch.zeros(3, ids.shape[1], 16, dtype=torch.float64), ids)
        base = model.logit_scale.exp() * image @ F.normalize(zero, dim=-1).T
    ig = out["ig"]
    assert ig.values.shape == (2, 3, ids.shape[1])
    _close(ig.scores, scores)
    torch.testing.assert_close(ig.values.sum(-1), scores - base, atol=2e-3, rtol=0)  # completeness (256 midpoints)
    assert [w for w, _ in ig.words(0, 0)] == ["<start>", "a", "red", "three", "<end>"]
    for name in ("ig", "inputxgrad", "chefer-mm", "attention", "attnlrp"):
        assert (out[name].values[:, ~out[name].mask] == 0).all()  # padding after <end> is never read


def test_sanity_checks_take_a_bound_dual_encoder_or_captioner() -> None:
    """`bind` gives the model explain binds (and its targets): the sanity checks re-initialise its copy's blocks."""
    import copy

    from attnscope.explain import multimodal, text

    model, x = _clip(), _images()
    bound, targets = text.bind(model, Text(TEXTS), 2)
    twin = copy.deepcopy(bound)
    assert twin.found.model is not model and twin.tower is twin.found.model.visual
    torch.testing.assert_close(twin(x), bound(x))
    compare = ats.sanity.Comparison(metrics=["spearman_abs"], calibration=())
    result = ats.sanity.model_randomization(bound, x, ("gradcam", "chefer-mm"), targets=targets[:, 0],
                                            comparison=compare)
    assert result.steps[0] == "head.proj" and any(s.startswith("tower.blocks.0") for s in result.steps)
    assert result.value("chefer-mm", result.steps[-1], "spearman_abs") < 0.9
    captioner_model = _captioner()
    bound, targets = multimodal.bind(captioner_model, "a red three")
    result = ats.sanity.model_randomization(bound, x[:1], ("alpha", "chefer-mm"), targets=targets[:, 2],
                                            comparison=compare)
    values = [result.value("alpha", step, "spearman_abs") for step in result.steps]
    assert result.steps[0] == "model.head" and min(v for v in values if v == v) < 0.9
