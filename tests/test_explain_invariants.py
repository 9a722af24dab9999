"""Invariants of every registered method, taken from the registry: all of them, of every kind.

Each method runs on the first of a few tiny models it applies to (a CNN with BatchNorm, in-place ReLUs
and dropout; TinyViT; LTPA; Show-Attend-Tell; a transformer captioner), so a method is checked the moment it is
registered:
the model is left as found (also when a module raises mid-way, in the forward or the backward pass),
no hook or graph outlives the call, a batch gives the maps of its images one by one, chunks give the
maps of the whole, results are reproducible, and repeated calls hold no memory.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope import models
from attnscope.data import DigitScenes
from attnscope.maps import AttentionMap, SequenceMap
from attnscope.registry import METHODS

# Smaller settings for speed only; the engine tests run the defaults.
FAST = {
    "ig": {"steps": 4, "batch_size": 5},
    "smoothgrad": {"n": 3, "batch_size": 4},
    "occlusion": {"window": 4, "stride": 4, "batch_size": 7},
    "scorecam": {"batch_size": 5},
    "ablationcam": {"batch_size": 3},
    "sat": {"max_len": 5},
    "rise": {"n": 64, "batch_size": 16},
    "extremal": {"steps": 20},
    "sscam": {"n": 3},
    "iscam": {"n": 3},
    "deepliftshap": {"n_references": 3},
    "gradientshap": {"n": 5},
    "smoothgradcam++": {"n": 2},
}


class Net(nn.Module):
    """conv-BN-ReLU(inplace) ×2, GAP, dropout, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


def _net() -> nn.Module:
    model = Net()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _vit() -> nn.Module:
    return models.get("vit", image_size=16, patch_size=4, dim=16, depth=2, heads=2, num_classes=4)


def _ltpa() -> nn.Module:
    return models.get("ltpa", num_classes=4, widths=[4, 6, 8, 8, 8], global_dim=8)


def _sat() -> nn.Module:
    vocab = DigitScenes.vocabulary()
    model = models.get("sat", vocab=vocab.to_json(), encoder_widths=[4, 8], embed_dim=8, hidden_dim=16, attn_dim=8,
                       dropout=0.0, max_len=5)
    with torch.no_grad():  # captions of different lengths
        for p in model.parameters():
            p.normal_(0, 0.6)
        model.decoder.out.bias[vocab.end_id] += 2.0
    return model


def _captioner() -> nn.Module:  # a transformer captioner explained per token of the caption it generates
    return models.get("captioner-tiny", vocab=DigitScenes.vocabulary().to_json(), image_size=16, patch_size=4, dim=8,
                      depth=1, decoder_depth=1, heads=2, max_len=4)


ALL = list(ats.list_methods())  # importing explain registers every method family
# (factory, image size): the first a method applies to is the one it is checked on.
MODELS: list[tuple[Callable[[], nn.Module], int]] = [(_net, 16), (_vit, 16), (_ltpa, 16), (_sat, 32),
                                                     (_captioner, 16)]
CHECKED = {name: next((i for i, (make, _) in enumerate(MODELS) if METHODS.get(name).applies(make()) is None), None)
           for name in ALL}


def setup(name: str, n: int = 3) -> tuple[nn.Module, torch.Tensor]:
    """A fresh model in train mode with a frozen parameter and a stale `.grad` (explain must keep both)."""
    index = CHECKED[name]
    make, size = MODELS[index]
    torch.manual_seed(0)
    model = make()
    model.train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.ones_like(params[-1])
    return model, torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def run(model: nn.Module, x: torch.Tensor, name: str, **kw) -> ats.Explanation:
    return ats.explain(model, x, name, options={name: FAST[name]} if name in FAST else None, **kw)


def snapshot(model: nn.Module) -> dict:
    hooks = {n: [len(getattr(m, a)) for a in dir(m) if a.endswith("_hooks") and isinstance(getattr(m, a), dict)]
             for n, m in model.named_modules()}
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": hooks,
        "forward": [m.__dict__.get("forward") for m in model.modules()],
        "flags": [getattr(m, "fused_attn", None) for m in model.modules()],
    }


def assert_same(a: dict, b: dict) -> None:
    for key in ("training", "requires_grad", "hooks", "forward", "flags"):
        assert a[key] == b[key], key
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    for ga, gb in zip(a["grad"], b["grad"], strict=True):
        assert (ga is None and gb is None) or torch.equal(ga, gb)


def test_every_method_of_the_design_is_registered_and_checked() -> None:
    design = ("cam gradcam gradcam++ xgradcam hirescam layercam eigencam scorecam ablationcam saliency inputxgrad "
              "smoothgrad ig guided-backprop guided-gradcam occlusion ltpa sat attention rollout grad-rollout flow")
    assert set(design.split()) <= set(ALL)
    unchecked = [name for name, index in CHECKED.items() if index is None]
    assert not unchecked, f"no model in this test that {unchecked} apply to: add one to MODELS"


@pytest.mark.parametrize("name", ALL)
def test_model_left_as_found_and_nothing_outlives_the_call(name: str) -> None:
    model, x = setup(name)
    before = snapshot(model)
    out = run(model, x, name)
    assert_same(snapshot(model), before)
    for _, amap in out.items():
        for t in (amap.values, amap.lowres):
            assert t is None or (not t.requires_grad and t.grad_fn is None)
        assert len(amap) == len(x) and amap.values.shape[-2:] == x.shape[-2:]
        assert torch.isfinite(amap.values).all() and amap.targets.dtype == torch.long
    assert name in out and out[name].method == name


class Boom(Exception):
    pass


class Faults:
    """Counts module calls during a block (a global hook: no module's own hooks change); raises at one."""

    def __init__(self, at: tuple[int, str] | None = None) -> None:
        self.at, self.calls, self.backwards = at, [], set()

    def __enter__(self) -> Faults:
        self.handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def _hook(self, _module, _inputs, output):
        i = len(self.calls)
        grad = isinstance(output, torch.Tensor) and output.requires_grad
        self.calls.append(grad)
        if self.at == (i, "forward"):
            raise Boom(f"forward at call {i}")
        if self.at is None and grad:  # the dry run: which outputs a backward pass reaches
            output.register_hook(lambda g: self.backwards.add(i))
        if self.at == (i, "backward") and grad:
            output.register_hook(lambda g: (_ for _ in ()).throw(Boom(f"backward at call {i}")))


@pytest.mark.parametrize("name", ALL)
def test_model_left_as_found_when_a_module_raises(name: str) -> None:
    model, x = setup(name)
    with Faults() as dry:  # how many module calls, which of them a backward pass reaches
        run(model, x, name)
    calls = dry.calls
    points = {(0, "forward"), (len(calls) // 2, "forward"), (len(calls) - 1, "forward")}
    grads = sorted(dry.backwards)
    points |= {(grads[0], "backward"), (grads[-1], "backward")} if grads else set()
    for point in sorted(points):
        model, x = setup(name)
        before = snapshot(model)
        with pytest.raises(Boom), Faults(point):
            run(model, x, name)
        assert_same(snapshot(model), before)


def _same(a: AttentionMap, i: int, b: AttentionMap, j: int) -> None:
    """Image i of `a` and image j of `b` hold the same map (sequences: over the steps both have)."""
    va, vb = a.values[i], b.values[j]
    if isinstance(a, SequenceMap):
        t = min(va.shape[0], vb.shape[0])
        assert torch.equal(a.mask[i, :t], b.mask[j, :t]) and not a.mask[i, t:].any() and not b.mask[j, t:].any()
        va, vb = va[:t], vb[:t]
    assert torch.equal(a.targets[i][: va.shape[0]] if a.targets.dim() > 1 else a.targets[i],
                       b.targets[j][: vb.shape[0]] if b.targets.dim() > 1 else b.targets[j])
    scale = float(vb.abs().max().clamp_min(1e-12))
    torch.testing.assert_close(va, vb, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", ALL)
def test_batched_equals_one_by_one_and_chunked_equals_whole(name: str) -> None:
    model, x = setup(name)
    batched = run(model, x, name)
    chunked = run(model, x, name, batch_size=2)
    assert sorted(chunked) == sorted(batched)
    for i in range(len(x)):
        single = run(model, x[i : i + 1], name)
        for key in batched:
            _same(single[key], 0, batched[key], i)
            _same(chunked[key], i, batched[key], i)
    if batched.logits is not None:
        torch.testing.assert_close(chunked.logits, batched.logits)


@pytest.mark.parametrize("name", ALL)
def test_seeded_determinism(name: str) -> None:
    model, x = setup(name)
    first, second = run(model, x, name), run(model, x, name)
    for key in first:
        assert torch.equal(first[key].values, second[key].values), key


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() touches torch's deprecated aliases
@pytest.mark.parametrize("name", ALL)
def test_no_memory_growth(name: str) -> None:
    model, x = setup(name, n=2)

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    for _ in range(3):  # warm-up: lazy caches (the auto layer per model and size)
        out = run(model, x, name)
    del out
    before = live_tensors()
    for _ in range(10):
        out = run(model, x, name)
    del out
    assert live_tensors() <= before
