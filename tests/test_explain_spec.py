"""`Explainer`: how to explain as one frozen, checked value; `explain(...)` is `Explainer(...)(model, images, ...)`."""

import dataclasses
import json
import pickle

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.errors import InputError, NotApplicableError, UnknownNameError
from attnscope.explain import Explainer, as_explainer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()


X = torch.rand(4, 3, 10, 10, generator=torch.Generator().manual_seed(1))


def test_calling_it_gives_the_maps_of_explain_with_the_same_fields() -> None:
    net = _net()
    how = Explainer(("gradcam", "ig", "smoothgrad:saliency"), layer="2", options={"ig": {"steps": 5},
                    "smoothgrad:saliency": {"n": 3}}, batch_size=3)
    got = how(net, X, torch.tensor([0, 1, 2, 0]))
    want = ats.explain(net, X, ("gradcam", "ig", "smoothgrad:saliency"), torch.tensor([0, 1, 2, 0]), "2",
                       {"ig": {"steps": 5}, "smoothgrad:saliency": {"n": 3}}, 3)
    assert list(got) == list(want) == ["gradcam", "ig", "smoothgrad:saliency"]
    for name in want:
        assert torch.equal(got[name].values, want[name].values)
    assert torch.equal(got.logits, want.logits) and torch.equal(got.targets, want.targets)


def test_its_targets_are_the_default_and_the_call_overrides_them() -> None:
    net = _net()
    how = Explainer("gradcam", targets=2)
    assert how(net, X).targets.tolist() == [2, 2, 2, 2]
    assert how(net, X, 1).targets.tolist() == [1, 1, 1, 1]
    assert torch.equal(how(net, X)["gradcam"].values, ats.explain(net, X, "gradcam", 2)["gradcam"].values)


def test_fields_are_checked_once_when_it_is_made() -> None:
    with pytest.raises(UnknownNameError, match="'gradcam'"):  # the close match is named
        Explainer("gradcm")
    with pytest.raises(UnknownNameError, match="method wrapper"):
        Explainer("smoothgrd:saliency")
    with pytest.raises(InputError, match="has no option"):
        Explainer("ig", options={"ig": {"stpes": 4}})
    with pytest.raises(InputError, match="ig.steps must be int"):
        Explainer("ig", options={"ig": {"steps": "four"}})
    with pytest.raises(InputError, match="not among the methods"):
        Explainer("gradcam", options={"ig": {"steps": 4}})
    with pytest.raises(InputError, match="batch_size"):
        Explainer("gradcam", batch_size=0)
    with pytest.raises(InputError, match="no methods"):
        Explainer(())
    with pytest.raises(InputError, match="output must be"):
        Explainer("gradcam", output=1.5)
    with pytest.raises(InputError, match="layer must be"):
        Explainer("gradcam", layer=3)
    with pytest.raises(NotApplicableError, match="scorecam"):
        Explainer(("gradcam", "scorecam"), differentiable=True)
    assert Explainer("gradcam", options={"gradcam": {"relu": "false"}}).options["gradcam"]["relu"] is False
    assert Explainer(["gradcam", "gradcam", "saliency"]).methods == ("gradcam", "saliency")


def test_it_is_frozen_and_keeps_a_copy_of_the_options() -> None:
    given = {"ig": {"steps": 4}}
    how = Explainer("ig", options=given)
    given["ig"]["steps"] = 400
    assert how.options["ig"]["steps"] == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        how.layer = "0"
    with pytest.raises(TypeError):
        how.options["ig"]["steps"] = 5
    assert pickle.loads(pickle.dumps(how)).options["ig"]["steps"] == 4


def test_replace_checks_the_new_value_and_drops_options_of_methods_gone() -> None:
    how = Explainer(("gradcam", "ig"), options={"ig": {"steps": 4}})
    assert how.replace(layer="2").layer == "2" and how.layer == "auto"
    assert dict(how.replace(methods="gradcam").options) == {}
    assert how.replace(methods=("ig",)).options["ig"]["steps"] == 4
    with pytest.raises(UnknownNameError):
        how.replace(methods="nope")
    with pytest.raises(InputError, match="batch_size"):
        how.replace(batch_size=-1)
    with pytest.raises(InputError, match="no field"):
        how.replace(method="gradcam")


@dataclasses.dataclass(frozen=True, eq=False)
class Tagged(Explainer):
    """An Explainer with one more field, as a future feature would add."""

    tag: str = "none"


def test_a_subclass_keeps_its_fields_through_replace_and_in_settings() -> None:
    how = Tagged("gradcam", tag="mine")
    again = how.replace(layer="2")
    assert isinstance(again, Tagged) and again.tag == "mine"
    assert how.settings()["tag"] == "mine" and "tag" not in Tagged("gradcam").settings()


def test_settings_are_json_and_leave_out_fields_at_their_defaults() -> None:
    plain = Explainer("gradcam")
    assert plain.settings() == {"methods": ["gradcam"], "layer": "auto", "options": {}, "batch_size": None}
    full = Explainer(("gradcam", "ig"), layer=nn.Linear(2, 2), options={"ig": {"steps": 3}}, targets=torch.tensor([1]),
                     output="logits", differentiable=False, batch_size=8)
    shown = json.loads(json.dumps(full.settings()))
    assert shown == {"methods": ["gradcam", "ig"], "layer": "Linear", "options": {"ig": {"steps": 3}},
                     "batch_size": 8, "targets": [1], "output": "logits"}


def test_as_explainer_takes_a_value_a_name_or_names() -> None:
    how = Explainer("saliency")
    assert as_explainer(how) is how
    assert as_explainer("gradcam").methods == ("gradcam",)
    assert as_explainer(["gradcam", "saliency"]).methods == ("gradcam", "saliency")
    assert as_explainer(None, ("saliency",)).methods == ("saliency",)
    with pytest.raises(InputError, match="Explainer"):
        as_explainer(3)


def test_explain_is_the_explainer_of_its_arguments() -> None:
    net = _net()
    seen: list[Explainer] = []

    class Spy(Explainer):
        def __call__(self, model, images, targets=None):
            seen.append(self)
            return super().__call__(model, images, targets)

    from attnscope.explain import api

    original = api.Explainer
    api.Explainer = Spy
    try:
        ats.explain(net, X, ("gradcam", "saliency"), 1, "2", {"gradcam": {"relu": False}}, 2, False, None)
    finally:
        api.Explainer = original
    (how,) = seen[:1]
    assert (how.methods, how.layer, how.batch_size, how.targets) == (("gradcam", "saliency"), "2", 2, None)
    assert how.options["gradcam"]["relu"] is False
    assert len(seen) == 3  # the call, then one call per chunk of 2 images (batch_size None)
    assert all(s.batch_size is None for s in seen[1:])
