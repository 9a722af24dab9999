"""What is explained: a class per image, K classes per image, or any scalar(s) per image computed from the output.

The user's `targets` becomes a `Target` over *rows*: one row per (image, target) pair, image-major
(row = b · K + k), one explained scalar per row. Methods work on rows, so a method written for one
target per image explains K targets per image unchanged; `explain` folds the rows back to (B, K, H, W).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from attnscope.errors import InputError

TargetSpec = None | int | str | Sequence | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass(frozen=True)
class Target:
    """A resolved target over rows: `classes` (N,) long (-1 for a callable) and the score it explains.

    For a callable target `fn(output) -> (N,)` or `(N, K)`, `column` (N,) says which of the K
    scores each row explains (None when fn gives one score per image).
    """

    classes: torch.Tensor  # (N,) long
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None  # output (N, ...) -> scores (N,) or (N, K)
    column: torch.Tensor | None = None  # (N,) long, with a (N, K) callable

    def score(self, output: torch.Tensor) -> torch.Tensor:
        """The explained scalar per row, shape (N,), from the model's output for these rows' inputs."""
        if self.fn is None:
            return class_logits(output).gather(1, self.classes.to(output.device)[:, None])[:, 0]
        n = len(self.classes)
        scores = checked_scores(self.fn(output), n)
        if self.column is None:
            return scores
        if scores.dim() != 2:
            raise InputError(f"the target callable returned {tuple(scores.shape)}, earlier (N, K) scores")
        return scores.gather(1, self.column.to(scores.device)[:, None])[:, 0]

    def take(self, index: torch.Tensor | slice) -> Target:
        """The target of some rows (a callable applies to any rows)."""
        return Target(self.classes[index], self.fn, None if self.column is None else self.column[index])

    def repeat(self, times: int) -> Target:
        """The target of the rows repeated `times` times row-major ([r0, r0, ..., r1, r1, ...]).

        A callable target applies to the repeated inputs as it is: it must score row by row.
        """
        col = None if self.column is None else self.column.repeat_interleave(times)
        return Target(self.classes.repeat_interleave(times), self.fn, col)


def class_logits(output: object) -> torch.Tensor:
    """`output` checked to be logits (N, classes); class targets need them."""
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(f"class targets need logits (B, classes) from the model, got {shape}; "
                         "pass a callable target that scores this output")
    return output


def resolve(spec: TargetSpec, output: torch.Tensor) -> tuple[Target, torch.Tensor, int | None]:
    """Turn the user's `targets` into (row target, per-image table, K) given the shared pass's output.

    (Class names are indices by then: `by_name`.)
    None → predicted class; int → that class for every image; LongTensor[B] → one class per image;
    LongTensor[B, K] → K classes per image (K = None for the one-target forms); callable(output) →
    scores (B,) or (B, K). The table is (B,) or (B, K) classes, -1 for a callable. A tensor of
    another length than B raises (never truncated), and so does a class outside [0, classes).
    A callable must score row by row (row i of the output alone gives score i): methods that run
    many inputs per image call it on batches of any size.
    """
    if callable(spec) and not isinstance(spec, torch.Tensor):
        b = _batch_of(output)
        scores = checked_scores(spec(output.detach() if isinstance(output, torch.Tensor) else output), b)
        k = scores.shape[1] if scores.dim() == 2 else None
        device = scores.device
        table = torch.full((b,) if k is None else (b, k), -1, dtype=torch.long, device=device)
        column = None if k is None else torch.arange(k, device=device).repeat(b)
        return Target(table.flatten(), spec, column), table, k
    logits = class_logits(output)
    b, n = logits.shape
    if spec is None:
        table = logits.argmax(dim=1).detach()
    elif isinstance(spec, bool):
        raise InputError(f"targets must be None, an int, a LongTensor[B] or [B, K], or a callable, got {spec!r}")
    elif isinstance(spec, int):
        table = torch.full((b,), _class_index(spec, n), dtype=torch.long, device=logits.device)
    elif isinstance(spec, torch.Tensor):
        table = _class_table(spec, b).to(device=logits.device, dtype=torch.long)
    else:
        kind = type(spec).__name__
        raise InputError(f"targets must be None, an int, a class name, a LongTensor[B] or [B, K], or a callable, "
                         f"got {kind}")
    bad = (table < 0) | (table >= n)
    if bad.any():
        raise InputError(f"target class {int(table[bad][0])} is out of range for a model with {n} classes")
    k = table.shape[1] if table.dim() == 2 else None
    return Target(table.flatten()), table, k


def _class_index(spec: int, n: int) -> int:
    if not -(2**62) < spec < 2**62:
        raise InputError(f"target class {spec} is out of range for a model with {n} classes")
    return spec


def _class_table(spec: torch.Tensor, b: int) -> torch.Tensor:
    if spec.dtype not in INTEGER_DTYPES:
        raise InputError(f"target tensor must hold integer classes, got dtype {spec.dtype}")
    if spec.dim() not in (1, 2) or spec.shape[0] != b or (spec.dim() == 2 and spec.shape[1] == 0):
        raise InputError(
            f"target tensor has shape {tuple(spec.shape)} but the batch has {b} images; pass one class per "
            f"image (LongTensor[{b}]), K classes per image (LongTensor[{b}, K]), an int, None or a callable"
        )
    return spec


def _batch_of(output: object) -> int:
    if isinstance(output, torch.Tensor):
        return output.shape[0]
    if isinstance(output, (list, tuple)):
        return len(output)
    raise InputError(f"cannot tell the batch size of a model output of type {type(output).__name__}")


def checked_scores(scores: object, n: int) -> torch.Tensor:
    """A callable target's scores checked to be (n,) or (n, K), finite where it matters."""
    if not isinstance(scores, torch.Tensor) or scores.dim() not in (1, 2) or scores.shape[0] != n:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise InputError(f"a callable target must return scores of shape ({n},) or ({n}, K), got {shape}")
    if not scores.is_floating_point():
        raise InputError(f"a callable target must return floating point scores, got {scores.dtype}")
    return scores


def by_name(spec: TargetSpec, names: Sequence[str] | None, batch: int) -> TargetSpec:
    """Class names in `targets` as indices: a name → its index (every image); B names → LongTensor[B]; B lists
    of K names → LongTensor[B, K]. Any other spec is returned as it is. `names`: the model's class names."""
    if isinstance(spec, str):
        return class_index(spec, names)
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, str) or _names_row(s) for s in spec):
        if len(spec) != batch:
            raise InputError(f"targets names {len(spec)} classes for a batch of {batch} images: give one name per "
                             f"image, a list of K names per image, or one name (a str) for every image")
        rows = [[class_index(s, names)] if isinstance(s, str) else [class_index(n, names) for n in s] for s in spec]
        if len({len(r) for r in rows}) != 1:
            raise InputError("targets: every image needs the same number of class names")
        table = torch.tensor(rows, dtype=torch.long)
        return table[:, 0] if all(isinstance(s, str) for s in spec) else table
    return spec


def _names_row(item: object) -> bool:
    return isinstance(item, (list, tuple)) and bool(item) and all(isinstance(n, str) for n in item)


def class_index(name: str, names: Sequence[str] | None) -> int:
    """The index of the class called `name` among the model's `names` (exact, else the one case-insensitive
    match); an unknown name raises with the close ones, a name two classes share raises with both indices."""
    if names is None:
        raise InputError(f"targets={name!r} names a class, but this model carries no class names: pass the class "
                         "index, or give the model its names (ats.models.with_class_names(model, names); "
                         "--classes FILE|imagenet on the command line)")
    found = [i for i, n in enumerate(names) if n == name]
    if not found:
        found = [i for i, n in enumerate(names) if n.casefold() == name.strip().casefold()]
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(f"{name!r} names {len(found)} classes ({', '.join(map(str, found))}): pass the index")
    close = close_names(name, names)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise InputError(f"no class is called {name!r} among the model's {len(names)} classes{hint}")


def close_names(name: str, names: Sequence[str], n: int = 5) -> list[str]:
    """Class names close to `name`: those containing it as a word, then the most similar spellings."""
    import difflib

    key = name.strip().casefold()
    words = [c for c in names if re.search(rf"\b{re.escape(key)}\b", c.casefold())]
    lowered = {c.casefold(): c for c in names}
    similar = [lowered[c] for c in difflib.get_close_matches(key, list(lowered), n=n, cutoff=0.6)]
    return list(dict.fromkeys(words + similar))[:n]


# --targets of the command line: which class each image's map explains.
TARGET_WORDS = {"predicted": "predicted", "pred": "predicted", "label": "label"}  # word → its one meaning
TARGET_FORMS = "predicted (the model's class), label (the data set's), a class index or a class name"


def parse_targets(text: str, classes: Sequence[str] | None = None, flag: str = "--targets") -> str | int:
    """A `--targets` text → "predicted", "label", a class index (≥ 0) or a class name; "pred" means "predicted".

    `classes`: the model's class names, when known; a name is then its index (close names suggested on a
    miss). Without them a name stays a name, resolved once the model is loaded (`named_choice`).
    """
    import difflib

    word = TARGET_WORDS.get(text.strip().lower())
    if word is not None:
        return word
    if re.fullmatch(r"\s*\+?\d+\s*", text):
        return int(text)
    if re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", text):  # a number, but no index
        raise InputError(f"{flag} must be {TARGET_FORMS}, got {text!r}")
    if classes is not None:
        return class_index(text, classes)
    close = difflib.get_close_matches(text.strip().lower(), list(TARGET_WORDS), n=1, cutoff=0.75)
    if close or not text.strip():
        hint = f" (did you mean {TARGET_WORDS[close[0]]}?)" if close else ""
        raise InputError(f"{flag} must be {TARGET_FORMS}, got {text!r}{hint}")
    return text


def named_choice(choice: str | int, names: Sequence[str] | None, flag: str = "--targets") -> str | int:
    """A parsed `--targets` with a class name made the model's index for it (its `names`: `class_index`, close
    names suggested on a miss); "predicted", "label" and indices as they are."""
    if not isinstance(choice, str) or choice in ("predicted", "label"):
        return choice
    if names is None:
        raise InputError(f"{flag} {choice!r} names a class, but this model carries no class names: give {flag} "
                         "predicted, label or the class index, or the model its names (--classes FILE|imagenet)")
    return class_index(choice, names)


def choice_targets(choice: str | int, labels: torch.Tensor | None) -> TargetSpec:
    """What `explain` takes for a parsed `--targets`: None (predicted), the images' `labels`, or the class (an index
    or a name)."""
    if choice == "predicted":
        return None
    if choice == "label":
        if labels is None or bool((labels < 0).any()):
            raise InputError("--targets label needs a built-in data set (images from a folder have no labels)")
        return labels
    return choice if isinstance(choice, str) else int(choice)  # a class name: `explain` resolves it by the model's
