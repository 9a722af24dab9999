"""Labels permuted at random: the data of the data randomisation test (Adebayo et al., NeurIPS 2018, §5;
after Zhang et al., ICLR 2017). A network can still fit them, but only by memorising.

Registered as data set "permuted": `get("permuted", split, n, seed, base="clutter", label_seed=0, ...)`
wraps data set `base` (built with the remaining options). The training split's labels are a fixed
permutation of its own labels (class counts unchanged); the test split keeps its true labels, so
test accuracy measures what was learnt about the task — chance, if only noise was.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from attnscope.errors import InputError


class PermutedLabels(Dataset):
    """`base` with label i replaced by label π(i), π a permutation drawn from `label_seed`."""

    def __init__(self, base: Dataset, label_seed: int = 0) -> None:
        if getattr(base, "kind", None) != "classification":
            kind = getattr(base, "kind", None)
            raise InputError(f"label permutation needs a classification data set, got kind {kind!r}")
        self.base, self.label_seed = base, label_seed
        self.kind, self.num_classes = "classification", base.num_classes
        labels = torch.tensor([int(base[i][1]) for i in range(len(base))])
        perm = torch.randperm(len(base), generator=torch.Generator().manual_seed(label_seed))
        self.labels = labels[perm]  # (n,) the permuted labels
        self.true_labels = labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        sample = self.base[index]
        label = int(self.labels[index])
        if hasattr(sample, "_replace"):  # NamedTuple samples keep their fields (box, mask, ...)
            return sample._replace(label=label)
        return (sample[0], label, *sample[2:])

    def __getattr__(self, name: str) -> Any:  # anything else the base data set offers
        if name in ("base", "labels", "true_labels"):
            raise AttributeError(name)
        return getattr(self.base, name)


def permuted(split: str, n: int, seed: int, base: str = "clutter", label_seed: int = 0, **cfg: Any) -> Dataset:
    """Data set `base`, with the training split's labels permuted (see the module docstring)."""
    from attnscope import data

    if base == "permuted":
        raise InputError("the base of 'permuted' cannot be 'permuted'")
    dataset = data.get(base, split, n, seed, **cfg)
    return PermutedLabels(dataset, label_seed) if split == "train" else dataset
