"""The image–text architectures people have, with random weights from tiny configs (nothing downloaded):
Hugging Face CLIPModel, SiglipModel, VisionEncoderDecoderModel (ViT + GPT-2), BLIP captioning, LLaVA and
Qwen2-VL, and open_clip's ViT-B-32. Every method that applies runs; the explained scores are the model's own
logits; the model is left as found (weights, modes, requires_grad, hooks); a batch gives its images' maps one by one.
Methods that cannot read a model's attention yet are refused with `NotApplicableError` (listed per model).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import attnscope as ats
from attnscope.errors import NotApplicableError
from attnscope.explain.multimodal import Caption
from attnscope.explain.text import Text
from attnscope.explain.text_tokens import explain_tokens

transformers = pytest.importorskip("transformers", reason="the dev extra installs transformers")
transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore", module="transformers")

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=100,
            max_position_embeddings=32)
PROMPTS = ["a red cat", "a dog on a mat"]


def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
    """A stand-in tokenizer: bos 98, one id per word, eos 99, padded with 0."""
    rows = [[98] + [3 + sum(map(ord, w)) % 90 for w in t.split()] + [99] for t in texts]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def caption_ids(text: str) -> list[int]:
    return [3 + sum(map(ord, w)) % 90 for w in text.split()]


def images(n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def snapshot(model: torch.nn.Module) -> dict:
    hooks = sum(len(getattr(m, a)) for m in model.modules() for a in dir(m)
                if a.endswith("_hooks") and isinstance(getattr(m, a), dict))
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "hooks": hooks,
            "training": [m.training for m in model.modules()], "grad": [p.requires_grad for p in model.parameters()]}


def left_as_found(model: torch.nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["hooks"] == before["hooks"] and after["training"] == before["training"]
    assert after["grad"] == before["grad"]
    assert all(torch.equal(v, after["state"][k]) for k, v in before["state"].items())


def one_by_one(model: torch.nn.Module, x: torch.Tensor, methods: list[str], targets, options=None) -> None:
    """The maps of a batch, then of each image alone: the same; and the model as found after both (after a first call:
    transformers installs its own output-capturing hooks at a model's first forward, for good)."""
    model.train()
    ats.explain(model, x[:1], methods[:1], targets=_one(targets, 0), options=options)
    before = snapshot(model)
    batch = ats.explain(model, x, methods, targets=targets, options=options)
    left_as_found(model, before)
    for i in range(len(x)):
        single = ats.explain(model, x[i : i + 1], methods, targets=_one(targets, i), options=options)
        for name in methods:
            a, b = single[name].values[0], batch[name].values[i]
            steps = min(a.shape[0], b.shape[0]) if a.dim() == 3 and isinstance(targets, Caption) else None
            a, b = (a[:steps], b[:steps]) if steps else (a, b)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max().clamp_min(1e-12)))
    return batch


def _one(targets, i: int):
    if isinstance(targets, Caption) and targets.captions is not None:
        return Caption([targets.captions[i]], targets.score, targets.tokenizer)
    return targets


def refused(model: torch.nn.Module, x: torch.Tensor, methods: list[str], targets) -> None:
    for name in methods:
        with pytest.raises(NotApplicableError):
            ats.explain(model, x, name, targets=targets)


# --- dual encoders ---------------------------------------------------------------------------------------------


def test_hf_clip_text_targets_and_token_relevance() -> None:
    torch.manual_seed(0)
    config = transformers.CLIPConfig(vision_config=VISION, text_config={**TEXT, "eos_token_id": 99, "bos_token_id": 98,
                                                                        "pad_token_id": 0}, projection_dim=16)
    model = transformers.CLIPModel(config)
    x, text = images(), Text(PROMPTS, tokenizer=tokenize)
    methods = ["gradcam", "attention", "rollout", "grad-rollout", "chefer-mm", "legrad", "saliency"]
    out = one_by_one(model, x, methods, text)
    with torch.no_grad():
        own = model.eval()(pixel_values=x, **tokenize(PROMPTS)).logits_per_image
    torch.testing.assert_close(out.logits, own)
    torch.testing.assert_close(out["chefer-mm"].values, out["grad-rollout"].values)
    tokens = explain_tokens(model, x, text, ["inputxgrad", "chefer-mm", "attention"])
    assert tokens["inputxgrad"].values.shape == (2, 2, 7)  # bos, the longer prompt's 5 words, eos
    one_by_one(model, x, ["attnlrp", "chefer"], text)  # AttnLRP's rules on Hugging Face attention (issue 28)


def test_hf_siglip_with_its_bias_and_attention_pooling() -> None:
    torch.manual_seed(0)
    config = transformers.SiglipConfig(vision_config=VISION, text_config={**TEXT, "max_position_embeddings": 9})
    model = transformers.SiglipModel(config)
    fixed = lambda texts: {"input_ids": torch.nn.functional.pad(tokenize(texts)["input_ids"], (0, 2))}  # noqa: E731
    # SigLIP pads every text to its full length and reads it at the last position
    x, text = images(), Text(PROMPTS, tokenizer=fixed)
    out = one_by_one(model, x, ["gradcam", "saliency", "inputxgrad"], text)
    with torch.no_grad():
        own = model.eval()(pixel_values=x, input_ids=fixed(PROMPTS)["input_ids"]).logits_per_image
    torch.testing.assert_close(out.logits, own)  # exp(τ)·cos + b
    one_by_one(model, x, ["attention", "grad-rollout", "chefer"], text)  # the pooling head's MHA read (issue 28)
    refused(model, x, ["chefer-mm"], text)  # its readout is the pooling head's query, not a CLS token


def test_open_clip_vit_b_32() -> None:
    open_clip = pytest.importorskip("open_clip", reason="the dev extra installs open_clip_torch")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    x, text = images(2, 224), Text(PROMPTS, tokenizer=tokenizer)
    out = one_by_one(model, x, ["gradcam", "chefer-mm", "attnlrp"], text)
    with torch.no_grad():
        own = model.eval().get_logits(x, tokenizer(PROMPTS))[0]
    torch.testing.assert_close(out.logits, own, rtol=1e-4, atol=1e-4)
    words = explain_tokens(model, x[:1], text, "inputxgrad")["inputxgrad"].words(0, 0)
    assert [w for w, _ in words] == ["<start_of_text>", "a</w>", "red</w>", "cat</w>", "<end_of_text>"]



def test_open_clip_text_tower_attention_and_chefer_equal_the_clip_notebook_on_its_own_weights() -> None:
    """The text tower's masked `nn.MultiheadAttention` (causal mask, 77-token context): `attention` is the last
    layer's head-averaged row of the end-of-text token, `chefer-mm` the CLIP notebook's `interpret()` R_text row
    (the reference's loop, ported in test_multimodal_parity.py), with the attention written out by hand in each
    block (its own weights and causal mask) and autograd — no attnscope code on the reference side."""
    open_clip = pytest.importorskip("open_clip", reason="the dev extra installs open_clip_torch")
    from test_multimodal_parity import ref_interpret_relevance

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    x, prompts = images(1, 224), ["a red cat", "a dog sitting on a mat"]
    found = explain_tokens(model, x, Text(prompts, tokenizer=tokenizer), ["attention", "chefer-mm"],
                           {"chefer-mm": {"start_layer": 0}})
    seen: list[torch.Tensor] = []
    blocks = [b.attn for b in model.transformer.resblocks]

    def by_hand(attn: torch.nn.MultiheadAttention):
        def call(query, key, value, need_weights=False, attn_mask=None, **_):
            """softmax(q kᵀ / √d + mask) v, written out (Vaswani et al. 2017, Eq. 1), per head."""
            x_ = query if attn.batch_first else query.transpose(0, 1)  # (K, L, E)
            k_, l_, e_ = x_.shape
            q, kk, v = (t.reshape(k_, l_, attn.num_heads, -1).transpose(1, 2)
                        for t in F.linear(x_, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
            scores = q @ kk.transpose(-2, -1) / q.shape[-1] ** 0.5
            weights = (scores if attn_mask is None else scores + attn_mask).softmax(dim=-1)  # (K, heads, L, L)
            seen.append(weights)
            out = F.linear((weights @ v).transpose(1, 2).reshape(k_, l_, e_), attn.out_proj.weight, attn.out_proj.bias)
            return (out if attn.batch_first else out.transpose(0, 1)), None
        return call

    ids = tokenizer(prompts)
    with torch.no_grad():
        own = model.get_logits(x, ids)[0]
    try:
        for a in blocks:
            a.forward = by_hand(a)
        logits = model.get_logits(x, ids)[0]  # (1, K)
        grads = torch.autograd.grad(logits.sum(), seen)  # prompt k's attention reaches only logit k
    finally:
        for a in blocks:
            del a.forward
    torch.testing.assert_close(logits.detach(), own, rtol=1e-5, atol=1e-5)  # the written-out attention is the model's
    eot = ids.argmax(dim=-1)  # open_clip reads the text at its end-of-text token, the largest id
    r_text = ref_interpret_relevance([(w.detach(), g) for w, g in zip(seen, grads, strict=True)])
    for k, e in enumerate(eot.tolist()):
        attention = seen[-1][k].mean(dim=0)[e, : e + 1].detach()
        torch.testing.assert_close(found["attention"].values[0, k, : e + 1], attention, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(found["chefer-mm"].values[0, k, : e + 1], r_text[k, e, : e + 1],
                                   rtol=1e-4, atol=1e-5)
    assert all(a.forward.__func__ is type(a).forward for a in blocks)

# --- captioners ------------------------------------------------------------------------------------------------


def _forced_scores(model, x: torch.Tensor, caption: str, forced) -> torch.Tensor:
    with torch.no_grad():
        return forced(model.eval(), x, caption)


def test_vision_encoder_decoder_vit_gpt2() -> None:
    torch.manual_seed(0)
    gpt2 = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32,
                                   add_cross_attention=True, bos_token_id=98, eos_token_id=99)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(transformers.ViTConfig(**VISION),
                                                                                  gpt2)
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = 98, 99, 0
    model = transformers.VisionEncoderDecoderModel(config)
    x, spec = images(), Caption(PROMPTS, tokenizer=caption_ids)
    out = one_by_one(model, x, ["gradcam", "saliency", "inputxgrad"], spec)
    ids = torch.tensor([98, *caption_ids(PROMPTS[0]), 99])
    with torch.no_grad():
        logits = model.eval()(pixel_values=x[:1], decoder_input_ids=ids[None, :-1]).logits[0]
    torch.testing.assert_close(out.logits[0, : len(ids) - 1], logits.gather(1, ids[1:, None])[:, 0])
    assert out["gradcam"].values.shape == (2, 6, 32, 32) and out["gradcam"].mask.sum(1).tolist() == [4, 6]
    one_by_one(model, x, ["cross-attention", "chefer-mm"], spec)  # GPT-2's attention (Conv1D c_attn): issue 28


def test_blip_captioning() -> None:
    torch.manual_seed(0)
    config = transformers.BlipConfig(vision_config=VISION, text_config={**TEXT, "encoder_hidden_size": 32,
                                                                        "bos_token_id": 98, "sep_token_id": 99,
                                                                        "pad_token_id": 0})
    model = transformers.BlipForConditionalGeneration(config)
    x, spec = images(), Caption(PROMPTS, tokenizer=caption_ids)
    out = one_by_one(model, x, ["gradcam", "saliency"], spec)
    ids = torch.tensor([model.decoder_input_ids, *caption_ids(PROMPTS[1]), 99])
    with torch.no_grad():
        logits = model.eval()(pixel_values=x[1:], input_ids=ids[None, :-1]).logits[0]
    torch.testing.assert_close(out.logits[1], logits.gather(1, ids[1:, None])[:, 0])
    one_by_one(model, x, ["cross-attention", "chefer-mm"], spec)  # BLIP's attention modules: issue 28


def _llava() -> torch.nn.Module:
    text = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    num_key_value_heads=2, vocab_size=100, max_position_embeddings=64,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = transformers.LlavaConfig(vision_config=transformers.CLIPVisionConfig(**VISION), text_config=text,
                                      image_token_id=97, vision_feature_layer=-1)
    return transformers.LlavaForConditionalGeneration(config)


def test_llava_style_decoder_only_vlm() -> None:
    torch.manual_seed(0)
    model = _llava()
    x, spec = images(), Caption(PROMPTS, tokenizer=caption_ids)
    out = one_by_one(model, x, ["gradcam", "cross-attention", "chefer-mm", "saliency"], spec)
    ids = torch.tensor([1, *caption_ids(PROMPTS[0]), 2])
    sequence = torch.cat([ids[:1], torch.full((16,), 97), ids[1:-1]])  # bos, 16 image tokens, the caption
    with torch.no_grad():
        logits = model.eval()(input_ids=sequence[None], pixel_values=x[:1]).logits[0, 16:]
    torch.testing.assert_close(out.logits[0, : len(ids) - 1], logits.gather(1, ids[1:, None])[:, 0])
    attention = out["cross-attention"].lowres  # the predicting position's attention over the 4 × 4 image tokens
    assert attention.shape[-2:] == (4, 4) and bool((attention.sum(dim=(-2, -1)) <= 1 + 1e-5).all())
    generated = ats.explain(model, x[:1], "saliency", targets=Caption(tokenizer=caption_ids, max_len=3))
    assert generated["saliency"].values.shape[1] <= 3
    one_by_one(model, x, ["attnlrp"], spec)  # AttnLRP's rules on Llama attention (issue 28)


def test_qwen2_vl_style_decoder_only_vlm() -> None:
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                vocab_size=100, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3, mlp_ratio=2)
    config = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=97,
                                        vision_start_token_id=95, vision_end_token_id=96)
    model = transformers.Qwen2VLForConditionalGeneration(config)
    x, spec = images(), Caption(PROMPTS, tokenizer=caption_ids)
    out = one_by_one(model, x, ["cross-attention", "chefer-mm", "saliency"], spec)
    assert out["chefer-mm"].lowres.shape[-2:] == (4, 4)  # 32 px / patch 4 / merge 2
    refused(model, x, ["gradcam"], spec)  # its vision tokens are flattened over the images
