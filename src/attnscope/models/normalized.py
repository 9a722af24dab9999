"""The input convention of a model's weights, inside the model: `Normalized(model, mean, std)` runs
`model((x − mean) / std)`, so it takes images in [0, 1] as every attnscope call gives them, and its maps are
maps of the image, not of the normalised tensor.

    model = ats.models.normalized(torchvision.models.resnet18(weights=...), "imagenet")
    ats.explain(model, images, "gradcam", layer="layer4")       # the model's own layer names

The wrapper is transparent: its modules, parameters and state-dict keys are the model's own (no `model.`
prefix), so layer names, optimizers and weights files work as for the bare model; attributes it does not have
(`class_names`, `config`, `num_classes`, ...) are the model's. A model built by `models.get` keeps its spec,
with the normalisation added, so `checkpoint.save` / `checkpoint.load` give back the wrapped model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from attnscope.errors import InputError
from attnscope.models.torchvision_models import IMAGENET_MEAN, IMAGENET_STD

STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # what torchvision's and timm's ImageNet weights expect
}


class Normalized(nn.Module):
    """`model((x − mean) / std)` for images x (B, C, H, W) in [0, 1]; `mean`, `std` one value per channel."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"Normalized wraps a torch.nn.Module, got {type(model).__name__}")
        mean_t, std_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean_t.dim() != 1 or mean_t.shape != std_t.shape or not bool((std_t > 0).all()):
            raise InputError(f"mean and std must be one value per channel, std > 0; got {list(mean)} and {list(std)}")
        self.model = model
        self.register_buffer("input_mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if x.dim() != 4 or x.shape[1] != self.input_mean.shape[1]:
            raise InputError(f"Normalized expects images (B, {self.input_mean.shape[1]}, H, W), got {tuple(x.shape)}")
        return self.model((x - self.input_mean) / self.input_std, *args, **kwargs)  # (B, C, H, W) normalised

    @property
    def attnscope_spec(self) -> dict[str, Any]:
        """The model's spec (`models.get`) with the normalisation, for `checkpoint.save`."""
        spec = self.model.attnscope_spec  # AttributeError for a model not built by `models.get`
        return {**spec, "normalize": {"mean": self.input_mean.flatten().tolist(),
                                      "std": self.input_std.flatten().tolist()}}

    def __getattr__(self, name: str) -> Any:
        """What the wrapper does not have is the model's (`class_names`, `config`, `num_classes`, ...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("model")
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    def named_modules(self, memo: set[nn.Module] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Module]]:
        """The wrapper, then the model's modules under the model's own names (the model itself also as `prefix`)."""
        memo = set() if memo is None else memo
        if self not in memo or not remove_duplicate:
            if remove_duplicate:
                memo.add(self)
            yield prefix, self
            yield from self.model.named_modules(memo, prefix, remove_duplicate)

    def get_submodule(self, target: str) -> nn.Module:
        return self if target == "" else self.model.get_submodule(target)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The model's state dict, keys as the bare model's (the mean and std are constants, not state)."""
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Load a state dict of the bare model (the keys `state_dict` gives)."""
        return self.model.load_state_dict(state_dict, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"mean={self.input_mean.flatten().tolist()}, std={self.input_std.flatten().tolist()}"


def normalized(model: nn.Module, how: str | Mapping[str, Sequence[float]]) -> nn.Module:
    """`model` behind its weights' input normalisation: a name of `STATS` ("imagenet"), "none" (the model as
    it is), or {"mean": [...], "std": [...]} (what a checkpoint's spec records)."""
    if how == "none":
        return model
    if isinstance(how, str):
        if how not in STATS:
            raise InputError(f"unknown normalisation {how!r}; known: none, {', '.join(STATS)}")
        mean, std = STATS[how]
    elif isinstance(how, Mapping) and {"mean", "std"} <= set(how):
        mean, std = how["mean"], how["std"]
    else:
        raise InputError(f"a normalisation is a name (none, {', '.join(STATS)}) or {{'mean': [...], 'std': [...]}}, "
                         f"got {how!r}")
    return Normalized(model, mean, std)
