"""The tracker's probe set: what a user may pass (a `Probe` or a tuple), and the first images of a data set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from attnscope.errors import AttnscopeError, InputError
from attnscope.track.store import Probe

ProbeSpec = Probe | tuple | list


def as_probe(spec: ProbeSpec | None) -> Probe:
    """A `Probe` from `Probe` or `(images, labels[, boxes])`, boxes None, (P, 4) ("box") or {region: (P, 4)}."""
    if isinstance(spec, Probe):
        return spec
    if spec is None:
        raise InputError("the tracker needs a probe: probe=(images (P, C, H, W), labels (P,)[, boxes (P, 4)]), "
                         "e.g. attnscope.track.probe_from(dataset, 64)")
    if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
        raise InputError(f"probe must be a Probe or (images, labels[, boxes]), got {_kind(spec)}")
    images, labels, boxes = (*spec, None) if len(spec) == 2 else spec
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() != 4:
        raise InputError(f"probe images must be a float tensor (P, C, H, W), got {_kind(images)}")
    labels = torch.as_tensor(labels) if isinstance(labels, (list, tuple)) else labels
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != (images.shape[0],):
        raise InputError(f"probe labels must be an integer tensor (P,) = ({images.shape[0]},), got {_kind(labels)}")
    regions = _regions(boxes)
    try:
        return Probe(images.detach().float().cpu(), labels.detach().long().cpu(), regions)
    except AttnscopeError as e:
        raise InputError(str(e)) from None


def _regions(boxes: Any) -> dict[str, torch.Tensor]:
    if boxes is None:
        return {}
    named = boxes if isinstance(boxes, Mapping) else {"box": boxes}
    for name, b in named.items():
        if not isinstance(b, torch.Tensor) or b.is_floating_point():
            raise InputError(f"probe region {name!r} must be an integer tensor of boxes (P, 4), got {_kind(b)}")
    return {str(k): v.detach().long().cpu() for k, v in named.items()}


def same_probe(a: Probe, b: Probe) -> bool:
    """Whether two probes hold the same images, labels, regions and texts."""
    return (a.images.shape == b.images.shape and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
            and a.texts == b.texts
            and a.regions.keys() == b.regions.keys()
            and all(torch.equal(a.regions[k], b.regions[k]) for k in a.regions))


def probe_from(dataset: Dataset, n: int) -> Probe:
    """The first `n` samples of a classification data set as a probe, with their boxes as regions.

    Samples are (image, label, ...) with an integer label (or a one-element integer tensor). Regions:
    "box" when samples carry a `box`, "decoy" when the data set has a decoy patch; masks when they carry one.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"probe must be >= 1 images, got {n!r}")
    if n > len(dataset):
        raise InputError(f"probe of {n} images asked for, but the data set has only {len(dataset)}")
    if getattr(dataset, "kind", None) == "captioning":
        return caption_probe(dataset, n)
    samples = [dataset[i] for i in range(n)]
    labels = [_label(s) for s in samples]
    images = torch.stack([s[0] for s in samples]).float()  # (P, C, H, W)
    regions: dict[str, torch.Tensor] = {}
    if all(isinstance(getattr(s, "box", None), torch.Tensor) for s in samples):
        regions["box"] = torch.stack([s.box for s in samples]).long()
    if getattr(dataset, "decoy", False):
        regions["decoy"] = torch.stack([dataset.decoy_box(i) for i in range(n)]).long()
    masks = None
    if all(isinstance(getattr(s, "mask", None), torch.Tensor) for s in samples):
        masks = torch.stack([s.mask for s in samples])
    split = getattr(dataset, "split", None)
    source = f"the first {n} images of {type(dataset).__name__}" + (f" ({split} split)" if split else "")
    return Probe(images, torch.tensor(labels, dtype=torch.long), regions, source, masks)


def caption_probe(dataset: Dataset, n: int) -> Probe:
    """A captioner's probe from the first `n` scenes: one entry per word of their first reference caption that
    names an object (a colour or number word with a box), with the caption up to that word as its text, the
    word's id as its label and the named object's box as region "box" (what the word's map is scored on)."""
    vocab = dataset.vocabulary()
    images, labels, boxes, texts = [], [], [], []
    for i in range(n):
        sample = dataset[i]
        alignment = getattr(sample, "alignments", None)
        if alignment is None:
            raise InputError("a captioner's probe needs captions whose words come with boxes (e.g. --data scenes)")
        words = alignment[0]
        for t, token in enumerate(words):
            if token.box is not None:
                images.append(sample.image)
                labels.append(vocab.index(token.word))
                boxes.append(torch.as_tensor(token.box))
                texts.append(" ".join(w.word for w in words[: t + 1]))
    if not images:
        raise InputError(f"the first {n} scenes name no object with a box")
    split = getattr(dataset, "split", None)
    source = (f"the object words of the first caption of the first {n} images of {type(dataset).__name__}"
              + (f" ({split} split)" if split else ""))
    return Probe(torch.stack(images).float(), torch.tensor(labels), {"box": torch.stack(boxes).long()}, source,
                 texts=tuple(texts))


def _label(sample: Any) -> int:
    label = sample[1] if isinstance(sample, (tuple, list)) and len(sample) >= 2 else None
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        return int(label)
    if isinstance(label, bool) or not isinstance(label, int):
        raise InputError("a probe holds classification data (samples of image, integer label, ...)")
    return label


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
