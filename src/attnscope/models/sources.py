"""Any PyTorch vision model from one string: what the CLI's `--model` / `--checkpoint` accept.

Sources, tried in this order (`build`):
- a run folder or attnscope checkpoint file (`checkpoint.load`);
- `timm:NAME`: timm's model NAME, built with `pretrained=False` (weights only from `--weights`);
- a registered name (`attnscope.models.names()`, e.g. `smallcnn`, `efficientnet_lite0`);
- any torchvision classification model name (`torchvision.models.list_models`);
- `hf:CLASS`: an image–text class of transformers (CLIPModel, BlipForConditionalGeneration, ...) from a local
  `save_pretrained` folder given as the weights, with its tokenizer (`models.image_text`);
- `open_clip:NAME`: an open_clip architecture with random weights or a local weights file, with its tokenizer;
- `module.path:factory`: the user's own code, `factory(**options)` returning an `nn.Module`.
Weights (`weights_file`) are a safetensors file or a torch file read with `weights_only=True`;
the class count is read from the file's head unless given. What was built is described in
`source` (kind, name, options, weights file and sha256, whether the weights are random).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnscope.errors import AttnscopeError, InputError, UnknownNameError
from attnscope.models import weights as wfile

KINDS = ("a run folder or checkpoint, a registered name, a torchvision classifier, timm:NAME, hf:CLASS (with "
         "--weights FOLDER), open_clip:NAME or module.path:factory")


def build(source: str, weights: str | None = None, num_classes: int | None = None,
          options: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """`(model in eval mode, info)` for `source`; info has "model" (spec), "info" (header) and "source"."""
    from attnscope import models
    from attnscope.models import checkpoint
    from attnscope.models.torchvision_models import classification_names

    options = dict(options or {})
    path = Path(source)
    if path.exists():
        if weights is not None or options or num_classes is not None:
            raise InputError("--weights, --num-classes and --model-opt go with a model name, not with a checkpoint")
        model, header = checkpoint.load(path)
        file = checkpoint.resolve_path(path)
        return model, {**header, "source": _described("checkpoint", source, {}, file, None)}
    if source.startswith("hf:"):  # an image–text model from a save_pretrained folder (`models.image_text`)
        from attnscope.models import image_text

        model, tokenizer = image_text.hf(source[3:], weights)
        return model, {"model": {"name": source, "config": {}}, "info": {}, "tokenizer": tokenizer,
                       "source": _described("transformers", source, {}, None, None) | {"weights": weights,
                                                                                       "random_weights": False}}
    state = wfile.read_state_dict(weights) if weights is not None else None
    classes = num_classes if num_classes is not None else _head_rows(state)
    tokenizer = None
    if source.startswith("open_clip:"):
        from attnscope.models import image_text

        kind, (model, tokenizer) = "open_clip", image_text.open_clip(source[len("open_clip:"):])
    elif source.startswith("timm:"):
        kind, model = "timm", _timm(source[len("timm:"):], classes, options)
    elif source in models.names():
        kind, model = "registered", _registered(source, classes, options, weights)
        state = None if getattr(model, "attnscope_weights", None) else state  # the builder loaded the file itself
    elif source in classification_names():
        from attnscope.models.torchvision_models import build_torchvision

        cfg = {**_classes(classes), **options}
        kind, model = "torchvision", _calling(lambda: build_torchvision(source, **cfg), source, cfg)
    elif ":" in source:
        kind, model = "factory", _factory(source, options)
    elif any(ch in source for ch in "/\\") or path.suffix:
        raise InputError(f"checkpoint not found: {source}")
    else:
        raise UnknownNameError(f"model ({KINDS})", source, [*models.names(), *classification_names()])
    if state is not None:
        wfile.load_into(model, state, str(weights))
    loaded = getattr(model, "attnscope_weights", None)
    file = Path(loaded["path"]) if loaded else (Path(weights) if weights is not None else None)
    spec = getattr(model, "attnscope_spec", None) or {"name": source, "config": options}
    return model.eval(), {"model": spec, "info": {}, "source": _described(kind, source, options, file, classes),
                          **({"tokenizer": tokenizer} if tokenizer is not None else {})}


def _described(kind: str, name: str, options: dict, file: Path | None, classes: int | None) -> dict[str, Any]:
    return {"kind": kind, "name": name, "options": options, "num_classes": classes,
            "weights": None if file is None else str(file), "sha256": None if file is None else wfile.sha256(file),
            "random_weights": file is None}


def _head_rows(state: dict[str, torch.Tensor] | None) -> int | None:
    """Rows of the last 2-D `.weight` in a state dict: the classifier head's class count, as saved last."""
    if state is None:
        return None
    heads = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
    return int(state[heads[-1]].shape[0]) if heads else None


def _classes(classes: int | None) -> dict[str, int]:
    return {} if classes is None else {"num_classes": classes}


def _registered(name: str, classes: int | None, options: dict, weights: str | None) -> nn.Module:
    """A registered model; a builder that reads its own weights files (`weights=`) is handed the file."""
    from attnscope import models

    cfg = {**_classes(classes), **options}
    if weights is None:
        return models.get(name, **cfg)
    try:
        return models.get(name, **cfg, weights=weights)
    except InputError as e:
        if "weights" not in str(e):  # another problem than a builder without a weights option
            raise
    return models.get(name, **cfg)


def _timm(name: str, classes: int | None, options: dict) -> nn.Module:
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise InputError("timm:NAME needs timm: pip install timm (or attnscope[pretrained])") from None
    if name not in timm.list_models():
        raise UnknownNameError("timm model", name, timm.list_models())
    cfg = {"pretrained": False, **_classes(classes), **options}
    return _calling(lambda: timm.create_model(name, **cfg), f"timm:{name}", cfg)


def _factory(source: str, options: dict) -> nn.Module:
    module_name, _, attr = source.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"--model {source}: cannot import {module_name!r} ({e})") from None
    except Exception as e:  # the user's module raised while importing
        raise InputError(f"--model {source}: importing {module_name!r} raised {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--model {source}: {module_name!r} has no callable {attr!r}")
    model = _calling(lambda: factory(**options), source, options)
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {source}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _calling(make, name: str, options: dict) -> nn.Module:
    """`make()`, a model builder's own errors (unknown options, bad values) as one line."""
    try:
        return make()
    except AttnscopeError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot build {name!r} with options {options}: {first}") from None
