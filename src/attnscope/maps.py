"""`AttentionMap`, the one result type: for an input batch and a target, a score per pixel.

Trainable, transformer and post-hoc maps all come back as an `AttentionMap`, so any of them can
be compared, tracked, sanity-checked, scored and drawn by the same code. Values stay raw (signed,
unnormalised); normalisation is the explicit step `normalized()`.

Three shapes, one type each:
- `AttentionMap` (B, H, W): one target per image (the usual case);
- `AttentionMap` (B, K, H, W): K targets per image (`targets` (B, K)); `amap[:, k]` is column k as (B, H, W);
- `SequenceMap` (B, T, H, W): one map per generated word (captioning), with the words and a mask of real steps.
`Explanation` is what `explain` returns: name → map, plus the shared pass's `logits` and `targets`; `maps[:3]`
and `maps.select(images=..., methods=...)` take some images or methods of all of them.

`values` means the raw tensors everywhere: `amap.values` (B, H, W), `maps.values` {name: (B, H, W)}.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from attnscope.console import brief
from attnscope.errors import InputError

if TYPE_CHECKING:
    import numpy as np

Index = int | slice | Sequence[int] | torch.Tensor


class Upsampled:
    """Values not computed yet: `make()` gives them, of `shape`, from the low-resolution map — on first read."""

    __slots__ = ("make", "shape")

    def __init__(self, make: Callable[[], torch.Tensor], shape: tuple[int, ...]) -> None:
        self.make, self.shape = make, torch.Size(shape)


class _Values:
    """The `values` field: a tensor, or `Upsampled` values computed on the first read and kept (so a consumer
    that reads only `lowres`, or nothing, never pays for the full-resolution map)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> torch.Tensor:
        if obj is None:
            raise AttributeError("values")  # no class-level default for the dataclass field
        stored = obj.__dict__[self.slot]
        if isinstance(stored, Upsampled):
            stored = obj.__dict__[self.slot] = stored.make()
        return stored

    def __set__(self, obj: Any, value: torch.Tensor | Upsampled) -> None:
        obj.__dict__[self.slot] = value


@dataclass(frozen=True, eq=False)
class AttentionMap:
    """Maps for a batch: `values` (B, H, W), or (B, K, H, W) for K targets per image, raw at the input's resolution.

    `targets` (B,) or (B, K) holds the explained class (-1 where a callable target was used);
    `lowres` holds the map at the layer's resolution for layer-based methods (CAMs); `values` may be given as
    `Upsampled` (what `explain` does for them): computed from `lowres` when first read, once;
    `meta` holds method options and anything method-specific (e.g. the estimator of an LTPA map).
    """

    values: torch.Tensor = _Values()  # (B, H, W) or (B, K, H, W) float
    method: str
    targets: torch.Tensor  # (B,) or (B, K) long
    layer: str | None = None
    lowres: torch.Tensor | None = None  # (B, h, w) or (B, K, h, w)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.shape
        if len(shape) not in (3, 4):
            raise ValueError(f"AttentionMap values must be (B, H, W) or (B, K, H, W), got {tuple(shape)}")
        if self.targets.shape != shape[:-2]:
            raise ValueError(f"targets {tuple(self.targets.shape)} do not match maps {tuple(shape)}")

    @property
    def shape(self) -> torch.Size:
        """The shape of `values`, without computing them."""
        return self.__dict__["_values"].shape

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        low = "" if self.lowres is None else f", lowres={tuple(self.lowres.shape)}"
        layer = "" if self.layer is None else f", layer={self.layer!r}"
        stored = self.__dict__["_values"]  # not computed for a repr when it is still to be upsampled
        values = brief(stored) if isinstance(stored, torch.Tensor) else f"tensor({tuple(stored.shape)}, on read)"
        return f"{type(self).__name__}({self.method!r}, values={values}, targets={brief(self.targets)}{layer}{low})"

    def numpy(self) -> np.ndarray:
        """The raw values as a numpy array (B, H, W) or (B, K, H, W), on the CPU and without a graph."""
        return self.values.detach().cpu().numpy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """`np.asarray(amap)`: the raw values (`numpy()`)."""
        out = self.numpy()
        return out if dtype is None else out.astype(dtype, copy=False)

    @property
    def multi(self) -> bool:
        """Whether the map holds several targets (or steps) per image: values (B, K, H, W)."""
        return len(self.shape) == 4

    def __getitem__(self, index: Index | tuple[Index, int]) -> AttentionMap:
        """`amap[i]`, `amap[2:5]`: some images; `amap[:, k]`: target column k, a (B, H, W) map."""
        if isinstance(index, tuple):
            images, column = index
            if not self.multi:
                raise IndexError(f"{self.method}: a (B, H, W) map has no target column; index images only")
            if not isinstance(column, int) or not -self.values.shape[1] <= column < self.values.shape[1]:
                raise IndexError(f"{self.method}: target column {column!r} out of range for {self.values.shape[1]}")
            return self._column(column)[images]
        if isinstance(index, int):
            index = [index]
        return self._map(lambda t: t[index])

    def _column(self, k: int) -> AttentionMap:
        return AttentionMap(self.values[:, k], self.method, self.targets[:, k], self.layer,
                            None if self.lowres is None else self.lowres[:, k], {**self.meta, "column": k})

    _batched = ("values", "targets", "lowres")  # the fields with a batch axis

    def _map(self, fn) -> AttentionMap:
        keep = lambda t: None if t is None else fn(t)
        return replace(self, **{name: keep(getattr(self, name)) for name in self._batched})

    def normalized(self) -> torch.Tensor:
        """Per-map min–max to [0, 1] (per image, and per target column); a constant map becomes zeros (never NaN)."""
        return normalize(self.values)

    def to(self, device: torch.device | str) -> AttentionMap:
        return self._map(lambda t: t.to(device))

    def cpu(self) -> AttentionMap:
        return self.to("cpu")

    def detach(self) -> AttentionMap:
        return self._map(torch.Tensor.detach)

    @staticmethod
    def cat(maps: Sequence[AttentionMap]) -> AttentionMap:
        """Concatenate maps of one method along the batch."""
        first = maps[0]
        low = None if first.lowres is None else torch.cat([m.lowres for m in maps])
        return replace(first, values=torch.cat([m.values for m in maps]),
                       targets=torch.cat([m.targets for m in maps]), lowres=low)


@dataclass(frozen=True, eq=False)
class SequenceMap(AttentionMap):
    """One map per generated step: `values` (B, T, H, W), `targets` (B, T) the word ids (-1 past the end),
    `mask` (B, T) true at real steps (the words and the closing <end>), `vocabulary` the id → word list.

    `seq.step(t)` is step t as a (B, H, W) map; `seq.words` the words of each caption (<end> left out);
    `seq.mean()` the mean map over each caption's words.
    """

    mask: torch.Tensor = None  # (B, T) bool
    vocabulary: tuple[str, ...] = ()
    end_id: int = -1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.values.dim() != 4 or self.mask is None or self.mask.shape != self.values.shape[:2]:
            raise ValueError(f"SequenceMap needs values (B, T, H, W) and mask (B, T), got {tuple(self.values.shape)}")

    def __repr__(self) -> str:
        n = self.word_mask.sum(1)
        return (f"SequenceMap({self.method!r}, values={brief(self.values)}, {len(self)} captions of "
                f"{int(n.min()) if len(n) else 0}–{int(n.max()) if len(n) else 0} words, "
                f"first: {' '.join(self.words[0]) if len(self) else ''!r})")

    def step(self, t: int) -> AttentionMap:
        """The maps of step `t` (B, H, W); targets are the ids of the words emitted there."""
        return self[:, t]

    @property
    def word_mask(self) -> torch.Tensor:
        """(B, T) true at the steps that emitted a word (real steps, <end> left out)."""
        return self.mask & (self.targets != self.end_id)

    @property
    def words(self) -> list[list[str]]:
        """The words of each image's caption."""
        keep = self.word_mask.cpu()
        return [[self.vocabulary[int(i)] for i, k in zip(row, kept, strict=True) if k]
                for row, kept in zip(self.targets.cpu(), keep, strict=True)]

    def mean(self) -> AttentionMap:
        """The mean map over each caption's words (B, H, W) (zeros for an empty caption)."""
        w = self.word_mask.to(self.values.dtype)  # (B, T)
        n = w.sum(1).clamp_min(1)
        avg = lambda t: (t * w[..., None, None]).sum(1) / n[:, None, None]
        low = None if self.lowres is None else avg(self.lowres)
        targets = torch.full((len(self),), -1, dtype=torch.long, device=self.targets.device)
        return AttentionMap(avg(self.values), self.method, targets, self.layer, low, {**self.meta, "mean": True})

    _batched = ("values", "targets", "lowres", "mask")

    @staticmethod
    def cat(maps: Sequence[SequenceMap]) -> SequenceMap:
        """Concatenate along the batch, padding every part to the longest sequence (mask false there)."""
        t = max(m.values.shape[1] for m in maps)
        padded = [m._padded(t) for m in maps]
        cat = lambda name: None if getattr(padded[0], name) is None else torch.cat([getattr(m, name) for m in padded])
        return replace(padded[0], values=cat("values"), targets=cat("targets"), lowres=cat("lowres"), mask=cat("mask"))

    def _padded(self, t: int) -> SequenceMap:
        extra = t - self.values.shape[1]
        if extra == 0:
            return self
        pad = lambda x, value: None if x is None else torch.cat([x, x.new_full((x.shape[0], extra, *x.shape[2:]),
                                                                                 value)], 1)
        return replace(self, values=pad(self.values, 0), targets=pad(self.targets, -1),
                       lowres=pad(self.lowres, 0), mask=pad(self.mask, False))


class Explanation(dict):
    """What `explain` returns: method name → `AttentionMap`, and the shared pass's `logits` (B, N) and `targets`.

    A `dict` of the maps, so code that reads `maps["gradcam"]`, iterates over the names or asks `len` (the
    number of methods) keeps working. `maps[:3]` (or `maps[i]`, `maps[[0, 2]]`, a bool mask) takes those
    images of every map, of the logits and of the targets; `maps.select(images=..., methods=...)` takes
    images and methods. `maps.values` are the raw tensors by name, as `amap.values` is one map's.
    `targets` is the explained class per image (B,) — or (B, K) for K targets — (-1 for a callable target).
    With `differentiable=True` the logits and maps keep their graph. Both are None when only
    generative methods (`sat`, whose maps carry their own words) were asked for: no shared pass ran.
    """

    def __init__(self, maps: Mapping[str, AttentionMap], logits: torch.Tensor | None,
                 targets: torch.Tensor | None, class_names: Sequence[str] | None = None) -> None:
        super().__init__(maps)
        self.logits = logits
        self.targets = targets
        self.class_names = None if class_names is None else tuple(class_names)  # the model's, where it has them

    def __getitem__(self, key: str | Index) -> Any:
        """`maps["gradcam"]`: one method's `AttentionMap`; `maps[:3]`, `maps[i]`, `maps[[0, 2]]`: those images."""
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.select(images=key)

    def select(self, images: Index | None = None, methods: str | Sequence[str] | None = None) -> Explanation:
        """The explanation of some `images` (an index, slice, list or bool mask over the batch) and/or some
        `methods` (a name or names, in the order given); each map, the logits and the targets sliced alike."""
        names = list(self) if methods is None else [methods] if isinstance(methods, str) else list(methods)
        unknown = [n for n in names if n not in self]
        if unknown:
            raise InputError(f"no map of {', '.join(map(repr, unknown))} here; this explanation holds "
                             f"{', '.join(self) or 'no map'}")
        if images is None:
            return Explanation({n: dict.__getitem__(self, n) for n in names}, self.logits, self.targets,
                               self.class_names)
        index = self._index(images)
        pick = lambda t: None if t is None else _pick(t, index)
        return Explanation({n: dict.__getitem__(self, n)[index] for n in names}, pick(self.logits),
                           pick(self.targets), self.class_names)

    def _index(self, images: Index) -> Index:
        """`images` as an index of the batch, refused with the batch size when it does not fit."""
        b = self.batch
        if isinstance(images, int):
            if not -b <= images < b:
                raise IndexError(f"image {images} out of range for a batch of {b}")
            return [images % b]
        if isinstance(images, torch.Tensor) and images.dtype == torch.bool and images.shape != (b,):
            raise IndexError(f"a bool mask over the images must be ({b},), got {tuple(images.shape)}")
        return images

    @property
    def batch(self) -> int:
        """The number of images explained (B)."""
        for amap in dict.values(self):
            return amap.values.shape[0]
        return 0 if self.logits is None else len(self.logits)

    @property
    def values(self) -> Values:
        """The raw maps by method name: `maps.values["gradcam"]` is `maps["gradcam"].values`."""
        return Values(self)

    def __repr__(self) -> str:
        shown = [f"{n} {tuple(m.values.shape)}" for n, m in dict.items(self)]
        more = f", … {len(shown)} methods" if len(shown) > 6 else ""
        logits = f", logits={brief(self.logits)}" if self.logits is not None else ""
        targets = f", targets={brief(self.targets)}" if self.targets is not None else ""
        images = f"{self.batch} image{'' if self.batch == 1 else 's'}"
        return f"Explanation({images}: {', '.join(shown[:6])}{more}{logits}{targets})"

    @property
    def predicted(self) -> torch.Tensor:
        """The predicted class of each image (B,), from the shared pass."""
        if not isinstance(self.logits, torch.Tensor) or self.logits.dim() != 2:
            raise InputError("no class logits to predict from: the methods asked for ran no shared pass "
                             "(sat), or the model returns no (B, classes) logits")
        return self.logits.argmax(dim=1)

    def cpu(self) -> Explanation:
        move = lambda t: t.cpu() if isinstance(t, torch.Tensor) else t
        return Explanation({k: v.cpu() for k, v in self.items()}, move(self.logits), move(self.targets),
                           self.class_names)

    @staticmethod
    def cat(parts: Sequence[Explanation]) -> Explanation:
        """Concatenate explanations of consecutive chunks of one batch."""
        maps = {k: type(parts[0][k]).cat([p[k] for p in parts]) for k in parts[0]}
        both = lambda name: None if getattr(parts[0], name) is None else _cat([getattr(p, name) for p in parts])
        return Explanation(maps, both("logits"), both("targets"), parts[0].class_names)


class Values(dict):
    """`explanation.values`: method name → raw values tensor. Calling it, `explanation.values()` (the dict
    method, which gave the `AttentionMap`s), still gives those, with a DeprecationWarning."""

    def __init__(self, owner: Explanation) -> None:
        super().__init__({k: m.values for k, m in dict.items(owner)})
        self._owner = owner

    def __call__(self) -> Iterator[AttentionMap]:
        warnings.warn("Explanation.values() is deprecated: `maps.values` is now the raw tensors by name (as "
                      "`amap.values` is one map's); iterate `maps.items()` for the AttentionMaps",
                      DeprecationWarning, stacklevel=2)
        return dict.values(self._owner)


def _pick(t: torch.Tensor | list, index: Index) -> torch.Tensor | list:
    """Rows `index` of a batch: a tensor's, or a list's (a detector's per-image outputs)."""
    if isinstance(t, torch.Tensor) or isinstance(index, slice):
        return t[index]
    rows = torch.as_tensor(index)
    rows = rows.nonzero().flatten() if rows.dtype == torch.bool else rows.flatten()
    return [t[int(i)] for i in rows.tolist()]


def _cat(parts: list) -> torch.Tensor | list:
    """Tensors concatenated along the batch; lists (a detector's per-image outputs) joined."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return [item for part in parts for item in part]


def normalize(values: torch.Tensor) -> torch.Tensor:
    """Per-map min–max of (..., H, W) maps to [0, 1] over the last two axes; constant maps map to zeros."""
    flat = values.flatten(-2).float()
    lo, hi = flat.min(dim=-1, keepdim=True).values, flat.max(dim=-1, keepdim=True).values
    span = hi - lo
    scaled = (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny)
    out = torch.where(span > 0, scaled, torch.zeros_like(flat))
    return out.view_as(values)


def upsample(lowres: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of (..., h, w) maps to (..., *size), as the CAM papers do (pixel centres aligned)."""
    if tuple(lowres.shape[-2:]) == tuple(size):
        return lowres
    lead = lowres.shape[:-2]
    flat = lowres.reshape(-1, 1, *lowres.shape[-2:])
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=align_corners)
    return out.view(*lead, *size)


def upsample_density(lowres: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (..., h, w) attention distributions, spread over the pixels (÷ pixels per cell),
    so that a map that sums to 1 on its grid sums to ~1 on the image."""
    return upsample(lowres, size) * (lowres.shape[-2] * lowres.shape[-1]) / (size[0] * size[1])
