"""Class names: what a classifier's output indices mean, carried by the model where it is known.

    ats.models.class_names(model)          # ("tench", "goldfish", ...) or None
    model = ats.models.with_class_names(model, "imagenet")   # or a list, or a file with one name per line
    ats.explain(model, images, "gradcam", targets="Egyptian cat")

Where the names come from: the pretrained `efficientnet_lite0` (ImageNet), a checkpoint (the names of the
data set it was trained on, recorded in its spec), a Hugging Face model's `config.id2label`, or the user
(`with_class_names`; `--classes FILE|imagenet` on the command line). `class_names` itself lives in
`attnscope.modules`, below every layer, so `explain` and `report` read it without importing `models`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from attnscope.errors import InputError
from attnscope.modules import class_names

__all__ = ["NAMED", "class_names", "named_list", "read_class_names", "with_class_names"]

MAX_NAME = 200  # characters of one class name read from a file
NAMED = {"imagenet": "the 1,000 ImageNet-1k classes (torchvision's list)", "digits": "0 to 9"}


def named_list(name: str) -> tuple[str, ...]:
    """A list of class names known by name: "imagenet" (ImageNet-1k, index order) or "digits" ("0".."9")."""
    if name == "imagenet":
        from attnscope.models.pretrained import imagenet_classes

        return tuple(imagenet_classes())
    if name == "digits":
        return tuple(str(d) for d in range(10))
    raise InputError(f"unknown list of class names {name!r}; known: {', '.join(NAMED)}, or a file with one name "
                     "per line")


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a file: one per line (blank lines and lines starting with # skipped), or a JSON list."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"class names file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not readable as UTF-8 text ({e})") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not a JSON list of names ({e})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"{path}: a JSON file of class names must hold a list of strings")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return checked(names, str(path))


def checked(names: Sequence[str], where: str = "class names") -> tuple[str, ...]:
    """`names` as a tuple of non-empty, short strings; anything else raises naming `where`."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InputError(f"{where}: give a sequence of names, got {type(names).__name__}")
    out = tuple(names)
    if not out:
        raise InputError(f"{where}: no class names")
    bad = [n for n in out if not isinstance(n, str) or not n.strip() or len(n) > MAX_NAME]
    if bad:
        raise InputError(f"{where}: every class name must be non-empty text of at most {MAX_NAME} characters, "
                         f"got {bad[0]!r}")
    return out


def with_class_names(model: nn.Module, names: str | Path | Sequence[str]) -> nn.Module:
    """`model` carrying its class names (a list, a named list such as "imagenet", or a file); returns the model.

    The number of names must equal the model's classes where that is known (`num_classes`, or the
    `out_features` of its last linear layer).
    """
    if isinstance(names, (str, Path)):
        names = named_list(str(names)) if str(names) in NAMED else read_class_names(names)
    names = checked(names)
    expected = _num_classes(model)
    if expected is not None and expected != len(names):
        raise InputError(f"{len(names)} class names for a model with {expected} classes")
    model.class_names = names
    return model


def _num_classes(model: nn.Module) -> int | None:
    """The model's number of classes: `num_classes`, else its last `nn.Linear`'s outputs; None if unknown."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return None if last is None else last.out_features
