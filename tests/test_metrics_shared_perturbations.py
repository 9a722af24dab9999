"""Faithfulness correlation and infidelity for several methods at once (a dict of maps): the model's
scores of the perturbed images do not depend on the map, so one set of passes serves every method,
and each method's numbers are exactly those of a call with its maps alone."""

import pytest
import torch
from torch import nn

from attnscope import evaluate, metrics
from attnscope.errors import InputError


def _setup():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3)).eval()
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 2, 1])
    maps = {"a": torch.rand(3, 8, 8), "b": torch.randn(3, 8, 8), "c": torch.rand(3, 8, 8) ** 3}
    scored: list[int] = []
    f = evaluate.class_logit(net, y)

    def counting(inputs, source):
        scored.append(len(inputs))
        return f(inputs, source)

    return counting, x, maps, scored


@pytest.mark.parametrize("metric,kw", [(metrics.faithfulness_correlation, {"runs": 7, "size": 9, "batch_size": 5}),
                                       (metrics.infidelity, {"n": 6, "batch_size": 4}),
                                       (metrics.infidelity, {"n": 6, "perturbation": "square", "normalize": True})])
def test_a_dict_of_maps_gives_each_methods_numbers_from_one_set_of_passes(metric, kw) -> None:
    f, x, maps, scored = _setup()
    alone = {}
    for name, m in maps.items():
        scored.clear()
        alone[name] = metric(m, x, f, **kw)
        one = sum(scored)
    scored.clear()
    together = metric(maps, x, f, **kw)
    assert sum(scored) == one  # the passes of one method, not three times them
    assert together.keys() == maps.keys()
    for name in maps:
        assert torch.equal(together[name], alone[name])


def test_a_dict_of_maps_is_checked_like_one_map() -> None:
    f, x, maps, _ = _setup()
    with pytest.raises(InputError, match="non-empty dict"):
        metrics.infidelity({}, x, f)
    with pytest.raises(InputError, match="maps must be"):
        metrics.faithfulness_correlation({"a": maps["a"], "bad": torch.rand(3, 4, 4)}, x, f, runs=3, size=4)
