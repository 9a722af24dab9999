"""Image–text models as people have them: how attnscope splits and runs each (`DualEncoder`, `Captioner`).

Dual encoders (`Text` targets, `explain_tokens`):
- Hugging Face `CLIPModel`: vision_model → last_hidden_state, `post_layernorm` on CLS, `visual_projection`;
  text read at its end-of-text token; score exp(τ)·cos.
- Hugging Face `SiglipModel`: embeddings → encoder, `post_layernorm`, attention-pooling `head` (no CLS); text
  read at its last position; score exp(τ)·cos + b (Zhai et al., ICCV 2023).
- open_clip `CLIP` (e.g. ViT-B-32): `visual._embeds` → `visual.transformer`, `ln_post`, CLS, `visual.proj`.

Captioners (`Caption` targets):
- Hugging Face `VisionEncoderDecoderModel` (e.g. ViT + GPT-2 with cross-attention): teacher-forced
  `decoder_input_ids`; Grad-CAM on the encoder's final `layernorm`.
- Hugging Face `BlipForConditionalGeneration`: `input_ids` with the text decoder's BOS; Grad-CAM on the vision
  model's `post_layernorm`.
- decoder-only VLMs whose image tokens sit in the language model's sequence (`LlavaForConditionalGeneration`,
  `Qwen2VLForConditionalGeneration`): the caption follows the image tokens; token t is predicted at position
  (image tokens + t); Grad-CAM on LLaVA's vision tower (Qwen2-VL's vision tokens are flattened over the images,
  (N·h·w, D), which no layer reading takes: layer methods are refused there unless given `layer=`).

Words come from the tokenizer given to `Text` / `Caption` (a Hugging Face tokenizer, or a callable texts → ids);
without one, a captioner's tokens are named `<id>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.explain.multimodal import CAPTIONERS, Captioner, ImageTokens
from attnscope.explain.text import DUAL_ENCODERS, DualEncoder


def _named(model: nn.Module, *names: str) -> bool:
    return type(model).__name__ in names and type(model).__module__.split(".")[0] in ("transformers", "open_clip")


def _hf_ids(tokenizer: Any, texts: Sequence[str], device: torch.device, **kw: Any) -> tuple[torch.Tensor, Any]:
    """(input_ids (K, L), attention_mask or None) from a Hugging Face tokenizer or a callable texts → ids / dict."""
    if tokenizer is None:
        raise InputError("this model does not carry its words: pass Text(..., tokenizer=...) (a Hugging Face "
                         "tokenizer, or a callable texts -> ids)")
    try:
        out = tokenizer(list(texts), return_tensors="pt", **kw)
    except TypeError:  # a plain callable texts -> ids
        out = tokenizer(list(texts))
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    mask = out.get("attention_mask") if hasattr(out, "get") else None
    return torch.as_tensor(ids).to(device), None if mask is None else torch.as_tensor(mask).to(device)


def _words(tokenizer: Any) -> Callable[[torch.Tensor], list[list[str]]]:
    """ids (K, L) → tokens: a Hugging Face tokenizer's, open_clip's BPE `decoder`, else "<id>"."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is not None:
        return lambda ids: [convert(row.tolist()) for row in ids]
    table = getattr(tokenizer, "decoder", None)
    name = (lambda i: str(table.get(i, f"<{i}>"))) if isinstance(table, dict) else (lambda i: f"<{i}>")
    return lambda ids: [[name(int(i)) for i in row] for row in ids]


class _Through(nn.Module):
    """A projection held as a Parameter (open_clip's `proj`) as a module: x @ P."""

    def __init__(self, owner: nn.Module, name: str) -> None:
        super().__init__()
        self.owner, self.name = [owner], name  # a list: not a child, so the owner's parameters are not doubled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ getattr(self.owner[0], self.name)


def _embedding_swap(embedding: nn.Module, run: Callable[[torch.Tensor], torch.Tensor]):
    """text_forward(e, ids): `run(ids)` with `embedding`'s output replaced by e (a hook held for the call only)."""

    def forward(e: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        handle = embedding.register_forward_hook(lambda _m, _i, _o: e)
        try:
            return run(ids)
        finally:
            handle.remove()

    return forward


def _hf_clip(model: nn.Module, tokenizer: Any) -> DualEncoder | None:
    if not _named(model, "CLIPModel"):
        return None
    vision, text = model.vision_model, model.text_model
    device = model.logit_scale.device
    masks: dict[int, Any] = {}

    def ids_of(texts: Sequence[str]) -> torch.Tensor:
        ids, mask = _hf_ids(tokenizer, texts, device, padding=True)
        masks[id(ids)] = mask
        return ids

    def features(ids: torch.Tensor) -> torch.Tensor:
        return _pooled(model.get_text_features(input_ids=ids, attention_mask=masks.get(id(ids))))

    eos = getattr(text, "eos_token_id", None)
    read_at = (lambda ids: ids.argmax(-1)) if eos in (None, 2) else (lambda ids: (ids == eos).int().argmax(-1))
    return DualEncoder(
        model, vision, lambda x: vision(pixel_values=x).last_hidden_state, vision.post_layernorm, lambda t: t[:, 0],
        model.visual_projection, lambda texts: features(ids_of(texts)), lambda: model.logit_scale.exp(),
        text_ids=ids_of, text_embed=text.embeddings.token_embedding, text_tower=text,
        text_forward=_embedding_swap(text.embeddings.token_embedding, features), read_at=read_at,
        words=_words(tokenizer), prefix=1)


def _pooled(out: Any) -> torch.Tensor:
    """A `get_*_features` result: the tensor (transformers 4) or the pooler output of its `ModelOutput` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _hf_siglip(model: nn.Module, tokenizer: Any) -> DualEncoder | None:
    if not _named(model, "SiglipModel"):
        return None
    vision, text = model.vision_model, model.text_model
    device = model.logit_scale.device

    def ids_of(texts: Sequence[str]) -> torch.Tensor:
        return _hf_ids(tokenizer, texts, device, padding="max_length")[0]

    def features(ids: torch.Tensor) -> torch.Tensor:
        return _pooled(model.get_text_features(input_ids=ids))

    return DualEncoder(
        model, vision, lambda x: vision.encoder(inputs_embeds=vision.embeddings(x)).last_hidden_state,
        vision.post_layernorm, vision.head, nn.Identity(), lambda texts: features(ids_of(texts)),
        lambda: model.logit_scale.exp(), lambda: model.logit_bias, text_ids=ids_of,
        text_embed=text.embeddings.token_embedding, text_tower=text,
        text_forward=_embedding_swap(text.embeddings.token_embedding, features),
        read_at=lambda ids: torch.full((len(ids),), ids.shape[1] - 1, device=ids.device), words=_words(tokenizer),
        prefix=0, cls=None)


def _open_clip(model: nn.Module, tokenizer: Any) -> DualEncoder | None:
    visual = getattr(model, "visual", None)
    if type(model).__module__.split(".")[0] != "open_clip" or not hasattr(visual, "_embeds") \
            or getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        return None
    device = model.logit_scale.device

    def ids_of(texts: Sequence[str]) -> torch.Tensor:
        if tokenizer is None:
            raise InputError("open_clip models need Text(..., tokenizer=open_clip.get_tokenizer(name))")
        return torch.as_tensor(tokenizer(list(texts))).to(device)

    bias = getattr(model, "logit_bias", None)
    return DualEncoder(
        model, visual, lambda x: visual.transformer(visual._embeds(x)), visual.ln_post, lambda t: t[:, 0],
        _Through(visual, "proj") if visual.proj is not None else nn.Identity(),
        lambda texts: model.encode_text(ids_of(texts)), lambda: model.logit_scale.exp(),
        (lambda: 0.0) if bias is None else (lambda: bias), text_ids=ids_of, text_embed=model.token_embedding,
        text_tower=model.transformer, text_forward=_embedding_swap(model.token_embedding, model.encode_text),
        read_at=lambda ids: ids.argmax(-1), words=_words(tokenizer), prefix=1)


DUAL_ENCODERS.extend([_hf_clip, _hf_siglip, _open_clip])


# --- captioners --------------------------------------------------------------------------------------------------


def _vocabulary(tokenizer: Any, size: int) -> tuple[str, ...]:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    return tuple(convert(list(range(size)))) if convert else tuple(f"<{i}>" for i in range(size))


def _encoder(tokenizer: Any, start: int, end: int) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        if tokenizer is None:
            raise InputError("this captioner does not carry its words: pass Caption(..., tokenizer=...)")
        out = tokenizer(text, add_special_tokens=False) if hasattr(tokenizer, "convert_ids_to_tokens") \
            else tokenizer(text)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return [start, *torch.as_tensor(ids).view(-1).tolist(), end]

    return encode


def _generator(run: Callable[..., torch.Tensor], start: int) -> Callable[[torch.Tensor, int | None], torch.Tensor]:
    def generate(images: torch.Tensor, max_len: int | None) -> torch.Tensor:
        out = run(images, max_len or 20)
        if out.shape[1] == 0 or not bool((out[:, 0] == start).all()):
            out = torch.cat([torch.full((len(out), 1), start, dtype=torch.long, device=out.device), out], dim=1)
        return out

    return generate


def _hf_vision_encoder_decoder(model: nn.Module, tokenizer: Any) -> Captioner | None:
    if not _named(model, "VisionEncoderDecoderModel"):
        return None
    config = model.config
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else \
        config.decoder.bos_token_id
    end = config.eos_token_id if config.eos_token_id is not None else config.decoder.eos_token_id
    pad = config.pad_token_id if config.pad_token_id is not None else end
    if start is None or end is None:
        raise InputError("a VisionEncoderDecoderModel needs decoder_start_token_id (or the decoder's bos) and an "
                         "eos_token_id in its config to be explained per token")
    layer = "encoder.layernorm" if isinstance(getattr(model.encoder, "layernorm", None), nn.Module) else None
    return Captioner(
        model, lambda x, ids: model(pixel_values=x, decoder_input_ids=ids[:, :-1]).logits,
        _generator(lambda x, n: model.generate(pixel_values=x, max_new_tokens=n, decoder_start_token_id=start,
                                               eos_token_id=end, pad_token_id=pad, do_sample=False), start),
        _encoder(tokenizer, start, end), _vocabulary(tokenizer, config.decoder.vocab_size), end, pad, layer, 1)


def _hf_blip(model: nn.Module, tokenizer: Any) -> Captioner | None:
    if not _named(model, "BlipForConditionalGeneration"):
        return None
    text = model.config.text_config
    start, end = model.decoder_input_ids, text.sep_token_id
    pad = text.pad_token_id if text.pad_token_id is not None else end
    return Captioner(
        model, lambda x, ids: model(pixel_values=x, input_ids=ids[:, :-1]).logits,
        _generator(lambda x, n: model.generate(pixel_values=x, max_new_tokens=n, do_sample=False), start),
        _encoder(tokenizer, start, end), _vocabulary(tokenizer, text.vocab_size), end, pad,
        f"vision_model.encoder.layers.{model.config.vision_config.num_hidden_layers - 1}", 1)


def _hf_llava(model: nn.Module, tokenizer: Any) -> Captioner | None:
    """LLaVA (Liu et al., NeurIPS 2023): [bos, image tokens..., caption]; the vision tower's features at
    `vision_feature_layer`, CLS dropped ("default") or kept ("full"), one language-model token per patch."""
    if not _named(model, "LlavaForConditionalGeneration"):
        return None
    config, text = model.config, model.config.text_config
    image_id, start, end = config.image_token_id, text.bos_token_id, text.eos_token_id
    pad = text.pad_token_id if text.pad_token_id is not None else end
    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    keep_cls = config.vision_feature_select_strategy == "full"
    count = grid * grid + int(keep_cls)
    spot = lambda _size: ImageTokens(1 + int(keep_cls), (grid, grid), count)  # noqa: E731
    layer = config.vision_feature_layer if isinstance(config.vision_feature_layer, int) else None
    depth = vision.num_hidden_layers
    cam = None if layer is None else f"model.vision_tower.encoder.layers.{layer % depth}"

    def sequence(ids: torch.Tensor) -> torch.Tensor:  # (N, T + 1) caption ids → the model's input ids
        images = torch.full((len(ids), count), image_id, dtype=torch.long, device=ids.device)
        return torch.cat([ids[:, :1], images, ids[:, 1:]], dim=1)

    def forced(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=sequence(ids[:, :-1]), pixel_values=x).logits
        return logits[:, count : count + ids.shape[1] - 1]  # the last image token predicts the first word

    def run(x: torch.Tensor, n: int) -> torch.Tensor:
        prompt = sequence(torch.full((len(x), 1), start, dtype=torch.long, device=x.device))
        out = model.generate(input_ids=prompt, pixel_values=x, max_new_tokens=n, do_sample=False, pad_token_id=pad)
        return out[:, prompt.shape[1] :]

    return Captioner(model, forced, _generator(run, start), _encoder(tokenizer, start, end),
                     _vocabulary(tokenizer, text.vocab_size), end, pad, cam, 1, spot)


def _qwen_patches(images: torch.Tensor, patch: int, temporal: int, merge: int) -> torch.Tensor:
    """Images (B, C, H, W) → Qwen2-VL's flattened patches (B·h·w, C·temporal·patch²) in its processor's order
    (each image repeated over `temporal` frames; 2 × 2 merged cells kept together)."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    if h % (patch * merge) or w % (patch * merge):
        raise InputError(f"Qwen2-VL takes images whose sides are multiples of {patch * merge} px, got {h}×{w}")
    frames = images[:, None].expand(b, temporal, c, h, w)
    cells = frames.reshape(b, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    return cells.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(b * gh * gw, c * temporal * patch * patch)


def _hf_qwen2_vl(model: nn.Module, tokenizer: Any) -> Captioner | None:
    """Qwen2-VL (Wang et al., 2024): [bos, vision start, image tokens..., vision end, caption], the image as
    flattened patches with its grid (`image_grid_thw`) and multimodal RoPE (`mm_token_type_ids`)."""
    if not _named(model, "Qwen2VLForConditionalGeneration"):
        return None
    config, vision = model.config, model.config.vision_config
    text = getattr(config, "text_config", config)
    image_id, begin, finish = config.image_token_id, config.vision_start_token_id, config.vision_end_token_id
    start = text.bos_token_id if text.bos_token_id is not None else begin
    end = text.eos_token_id if text.eos_token_id is not None else finish
    pad = text.pad_token_id if text.pad_token_id is not None else end
    patch, merge = vision.patch_size, vision.spatial_merge_size
    seen: dict[str, tuple[int, int]] = {}  # the grid of the images last run (what Grad-CAM's reading needs)

    def grid(size: tuple[int, int]) -> tuple[int, int]:
        return size[0] // patch // merge, size[1] // patch // merge

    def inputs(x: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = seen["grid"] = grid(tuple(x.shape[-2:]))
        n = len(ids)
        fixed = torch.tensor([begin] + [image_id] * (h * w) + [finish], device=ids.device).expand(n, -1)
        seq = torch.cat([ids[:, :1], fixed, ids[:, 1:]], dim=1)
        thw = torch.tensor([[1, h * merge, w * merge]], device=x.device).expand(len(x), 3)
        return {"input_ids": seq, "pixel_values": _qwen_patches(x, patch, vision.temporal_patch_size, merge),
                "image_grid_thw": thw, "mm_token_type_ids": (seq == image_id).long()}

    def forced(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        h, w = grid(tuple(x.shape[-2:]))
        logits = model(**inputs(x, ids[:, :-1])).logits
        return logits[:, h * w + 2 : h * w + 2 + ids.shape[1] - 1]  # vision end predicts the first word

    def run(x: torch.Tensor, n: int) -> torch.Tensor:
        prompt = inputs(x, torch.full((len(x), 1), start, dtype=torch.long, device=x.device))
        out = model.generate(**prompt, max_new_tokens=n, do_sample=False, pad_token_id=pad)
        return out[:, prompt["input_ids"].shape[1] :]

    def spot(size: tuple[int, int]) -> ImageTokens:
        h, w = grid(size)
        return ImageTokens(2, (h, w), h * w + 2)

    return Captioner(model, forced, _generator(run, start), _encoder(tokenizer, start, end),
                     _vocabulary(tokenizer, text.vocab_size), end, pad, None, 0, spot)


CAPTIONERS.extend([_hf_vision_encoder_decoder, _hf_blip, _hf_llava, _hf_qwen2_vl])
