"""Image–text models people have, built from local files only: `hf:CLASS` (a transformers class, from a folder in
`save_pretrained` layout) and `open_clip:NAME` (an open_clip architecture, `pretrained=None`, weights from a file).

Each comes with its tokenizer when one is found (the folder's tokenizer files; open_clip's bundled BPE), which is
what `Text` / `Caption` targets need for models that do not carry their words.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from torch import nn

from attnscope.errors import InputError

HF_CLASSES = ("CLIPModel", "SiglipModel", "VisionEncoderDecoderModel", "BlipForConditionalGeneration",
              "LlavaForConditionalGeneration", "Qwen2VLForConditionalGeneration")


def hf(name: str, folder: str | None) -> tuple[nn.Module, Any]:
    """transformers' class `name` from `folder` (config.json, model.safetensors) and its tokenizer (or None)."""
    if name not in HF_CLASSES:
        raise InputError(f"hf:{name}: attnscope explains the image–text classes {', '.join(HF_CLASSES)}")
    if folder is None or not Path(folder).is_dir() or not (Path(folder) / "config.json").is_file():
        raise InputError(f"hf:{name} needs --weights FOLDER: a local folder written by save_pretrained "
                         "(config.json and model.safetensors); nothing is downloaded")
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise InputError("hf:CLASS needs transformers: pip install attnscope[transformers]") from None
    try:
        model = getattr(transformers, name).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"hf:{name}: cannot load {folder}: {str(e).splitlines()[0]}") from None
    tokenizer = None
    if any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def open_clip(name: str) -> tuple[nn.Module, Any]:
    """open_clip's architecture `name` with random weights (load a file with --weights), and its tokenizer."""
    try:
        module = importlib.import_module("open_clip")
    except ImportError:
        raise InputError("open_clip:NAME needs open_clip_torch: pip install open_clip_torch") from None
    if name not in module.list_models():
        raise InputError(f"open_clip:{name} is not an open_clip architecture (open_clip.list_models())")
    return module.create_model(name, pretrained=None).eval(), module.get_tokenizer(name)
