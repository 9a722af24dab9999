"""Invariants of every registered post-hoc method, taken from the registry.

A method registered with kind cam, gradient or perturbation is checked here the moment it is
registered: the model is left as found (also when the model raises mid-way), no hook or graph
outlives the call, a batch gives the maps of its images one by one, and results are reproducible.
"""

import pytest
import torch
from torch import nn

import attnscope as ats

POSTHOC = [name for name, kind in ats.list_methods().items() if kind in ("cam", "gradient", "perturbation")]

# Smaller settings for speed only; every method also runs with its defaults in the tests below.
FAST = {
    "ig": {"steps": 4, "batch_size": 5},
    "smoothgrad": {"n": 3, "batch_size": 4},
    "occlusion": {"window": 4, "stride": 4, "batch_size": 7},
    "scorecam": {"batch_size": 5},
    "ablationcam": {"batch_size": 3},
}


class Boom(Exception):
    pass


class Net(nn.Module):
    """conv-BN-ReLU(inplace) ×2, GAP, dropout, linear; `fail_at` makes forward call k raise."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)
        self.calls: list[bool] = []  # per forward: whether its output required grad
        self.fail_at: tuple[int, str] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))
        self.calls.append(out.requires_grad)
        if self.fail_at is not None and self.fail_at[0] == len(self.calls) - 1:
            if self.fail_at[1] == "forward":
                raise Boom("forward")
            out.register_hook(lambda g: (_ for _ in ()).throw(Boom("backward")))
        return out


def make_model() -> Net:
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    model.train()  # explain must switch to eval and back
    model.features[0].weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    return model


def snapshot(model: nn.Module) -> dict:
    hooks = {
        name: [
            len(getattr(m, attr))
            for attr in dir(m)
            if attr.endswith("_hooks") and isinstance(getattr(m, attr), dict)
        ]
        for name, m in model.named_modules()
    }
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": hooks,
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["hooks"] == b["hooks"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    for ga, gb in zip(a["grad"], b["grad"], strict=True):
        assert (ga is None and gb is None) or torch.equal(ga, gb)


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(7))


def run(model: nn.Module, x: torch.Tensor, name: str, **kw) -> ats.AttentionMap:
    opts = {name: FAST[name]} if name in FAST else None
    return ats.explain(model, x, name, options=opts, **kw)[name]


def test_every_post_hoc_method_of_the_design_is_registered() -> None:
    design = (
        "cam gradcam gradcam++ xgradcam hirescam layercam eigencam scorecam ablationcam saliency "
        "inputxgrad smoothgrad ig guided-backprop guided-gradcam occlusion"
    ).split()
    assert sorted(POSTHOC) == sorted(design)


@pytest.mark.parametrize("name", POSTHOC)
def test_model_left_as_found_and_nothing_outlives_the_call(name: str) -> None:
    model = make_model()
    before = snapshot(model)
    out = run(model, images(), name)
    assert_same(snapshot(model), before)
    for t in (out.values, out.lowres):
        assert t is None or (not t.requires_grad and t.grad_fn is None)
    assert out.values.shape == (3, 16, 16) and torch.isfinite(out.values).all()
    assert out.method == name and out.targets.dtype == torch.long


@pytest.mark.parametrize("name", POSTHOC)
def test_model_left_as_found_when_the_model_raises(name: str) -> None:
    model = make_model()
    run(model, images(), name)  # dry run: how many forwards, which ones backpropagate
    calls = list(model.calls)
    points = {(0, "forward"), (len(calls) - 1, "forward")}
    points |= (
        {(i, "backward") for i in (calls.index(True), len(calls) - 1 - calls[::-1].index(True))}
        if any(calls)
        else set()
    )
    for point in sorted(points):
        model = make_model()
        before = snapshot(model)
        model.fail_at = point
        with pytest.raises(Boom):
            run(model, images(), name)
        model.fail_at = None
        model.calls = []
        assert_same(snapshot(model), before)


@pytest.mark.parametrize("name", POSTHOC)
def test_batched_equals_one_by_one(name: str) -> None:
    model, x = make_model(), images()
    batched = run(model, x, name)
    chunked = ats.explain(model, x, name, options={name: FAST[name]} if name in FAST else None, batch_size=2)[
        name
    ]
    for i in range(len(x)):
        single = run(model, x[i : i + 1], name)
        assert int(single.targets[0]) == int(batched.targets[i])
        scale = batched.values[i].abs().max().clamp_min(1e-12)
        torch.testing.assert_close(single.values[0], batched.values[i], rtol=1e-4, atol=1e-5 * float(scale))
        torch.testing.assert_close(chunked.values[i], batched.values[i], rtol=1e-4, atol=1e-5 * float(scale))


@pytest.mark.parametrize("name", POSTHOC)
def test_deterministic(name: str) -> None:
    model, x = make_model(), images()
    assert torch.equal(run(model, x, name).values, run(model, x, name).values)
