"""track.replay.Upstream: reruns that change a model only from some modules on reuse the modules before them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.track import CausalMeasures
from attnscope.track.causal import evaluating, substituted_attention
from attnscope.track.replay import Upstream


class Toy(nn.Module):
    """`shared` runs before `att` and again after it; `body` holds a layer that counts its real forwards."""

    def __init__(self, in_place: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.att, self.head = nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 4), nn.Linear(4, 2)
        self.shared, self.in_place = nn.Tanh(), in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(self.body(x))
        z = self.att(h)
        if self.in_place:
            h.mul_(2.0)  # changes a recorded output after it was made: nothing may be replayed
        return self.head(self.shared(z) + h)


def doubled(module: nn.Module):
    return module.register_forward_hook(lambda _m, _i, out: out * 2.0)


def real_calls(model: Toy) -> list[int]:
    calls: list[int] = []
    model.body[0].register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("in_place", [False, True])
def test_a_replayed_rerun_equals_the_full_rerun_and_skips_only_what_ran_before(in_place) -> None:
    """Chunks of 3 and 2 rows: the rerun with `att`'s output doubled equals the model run in full with it doubled
    (`shared`'s second call, after `att`, runs for real), without running `body` again; a recorded output changed
    in place later in the forward leaves nothing to replay (the model runs in full, same outputs)."""
    model, x = Toy(in_place).eval(), torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    calls = real_calls(model)
    upstream = Upstream(model, [model.att])
    with torch.no_grad():
        with upstream.recording():
            base = torch.cat([model(x[:3]), model(x[3:])])
        torch.testing.assert_close(base, model(x), rtol=1e-6, atol=1e-6)
        handle = doubled(model.att)
        expected = model(x)
        calls.clear()
        with upstream.replaying() as replayed:
            rerun = torch.cat([model(x[:3]), model(x[3:])])
        handle.remove()
    assert replayed is (not in_place) and upstream.valid is (not in_place)
    assert calls == ([3, 2] if in_place else [])  # body ran again only where nothing could be replayed
    assert (rerun - base).abs().max() > 1e-3  # the change reached the output
    torch.testing.assert_close(rerun, expected, rtol=1e-6, atol=1e-6)
    assert "forward" not in model.body.__dict__ and "forward" not in model.shared.__dict__  # put back
    if not in_place:
        with torch.no_grad(), upstream.replaying(), pytest.raises(RuntimeError, match="recorded chunks"):
            model(x)  # 5 rows where 3 were recorded


def test_a_model_whose_early_module_returns_a_tuple_is_run_in_full() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, -x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair, self.att = Pair(), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.pair(x)
            return self.att(a) + b

    net, x = Net(), torch.randn(3, 2)
    upstream = Upstream(net, [net.att])
    with torch.no_grad(), upstream.recording():
        net(x)
    with upstream.replaying() as replayed:
        assert not replayed and not upstream.valid and upstream.forwards == [(3, [])]


def test_the_substitution_passes_run_the_attention_and_head_only_with_the_full_passes_gaps() -> None:
    """LTPA (two estimators, BatchNorm with running statistics): the tracker's substitution measures equal the gaps
    and accuracies of the model run in full under each substitution, while its first convolution sees only the
    base and blank-out rows (6 + 6·4), not 2·6 more."""
    torch.manual_seed(0)
    model = ats.models.get("ltpa", widths=[8, 16, 16, 16], estimators=2).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
        for e in model.estimators:
            e.u.weight.mul_(50.0)  # attention far from uniform: the substitutions change the logits
    x, labels = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(6) % 10
    rows: list[int] = []
    handle = model.stages[0][0].register_forward_pre_hook(
        lambda _m, args: rows.append(args[0].shape[0]) if type(args[0]) is torch.Tensor else None)
    try:
        out = CausalMeasures(grid=2, sinks=False)(model, x, labels, {}, {})
    finally:
        handle.remove()
    assert sum(rows) == 6 + 6 * 4
    folded = CausalMeasures(grid=2, sinks=False)(model, x, labels, {}, {})  # no hook: through the folded copy
    assert folded == pytest.approx(out, abs=2e-5)
    with evaluating(model):
        base = model(x).gather(1, labels[:, None])[:, 0].double()
        for kind in ("uniform", "permuted"):
            with substituted_attention(model, kind, seed=0):
                sub = model(x)
            gap = float((base - sub.gather(1, labels[:, None])[:, 0].double()).mean())
            assert abs(gap) > 1e-4  # the substitution changed the scores (the tolerance below is 2e-6)
            assert out[f"own/gap@{kind}"] == pytest.approx(gap, abs=2e-6)
            assert out[f"own/acc@{kind}"] == pytest.approx(float((sub.argmax(1) == labels).double().mean()))
