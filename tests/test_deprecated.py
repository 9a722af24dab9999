"""Keywords of the last release, accepted for one more with a DeprecationWarning that points at the caller's line."""

import dataclasses
import inspect
import warnings

import pytest
import torch

from attnscope.deprecated import into, moved, renamed
from attnscope.explain import HOW_KEYWORDS, Explainer, into_how


@dataclasses.dataclass(frozen=True)
class Knobs:
    depth: int = 1
    width: int = 2


@moved("knobs", ("depth", "width"), into(Knobs))
@moved("how", HOW_KEYWORDS, into_how)
def consumer(x: int, how: Explainer | str = "gradcam", knobs: Knobs | None = None, *, flag: bool = False):
    return x, how, knobs, flag


def test_the_new_signature_is_what_inspect_and_help_show() -> None:
    assert list(inspect.signature(consumer).parameters) == ["x", "how", "knobs", "flag"]


def test_old_keywords_build_the_new_values_with_one_warning_each_at_the_callers_line() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, how, knobs, flag = consumer(1, methods=("gradcam", "saliency"), layer="features", width=5, flag=True)
    assert (x, flag, knobs) == (1, True, Knobs(1, 5))
    assert isinstance(how, Explainer) and how.methods == ("gradcam", "saliency") and how.layer == "features"
    assert sorted(str(w.message).split("(")[1].split(")")[0] for w in caught) == ["methods=, layer=...", "width=..."]
    assert all(w.category is DeprecationWarning and w.filename == __file__ for w in caught)


def test_old_keywords_complete_a_value_given_and_refuse_a_clash() -> None:
    with pytest.warns(DeprecationWarning):
        _, how, knobs, _ = consumer(1, Explainer("ig"), Knobs(3, 4), depth=7, options={"ig": {"steps": 4}})
    assert how.options["ig"]["steps"] == 4 and knobs == Knobs(7, 4)
    with pytest.raises(TypeError, match="not both"), pytest.warns(DeprecationWarning):
        consumer(1, "gradcam", methods=("saliency",))
    with pytest.raises(TypeError, match="unexpected keyword"):
        consumer(1, nope=2)


def test_a_call_without_old_keywords_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert consumer(2, "saliency")[1] == "saliency"


def test_renamed_keeps_the_old_name_for_one_release() -> None:
    @renamed(labels="targets")
    def scored(images: torch.Tensor, targets: torch.Tensor | None = None):
        return targets

    with pytest.warns(DeprecationWarning, match=r"labels=\.\.\.\) is deprecated.*targets="):
        assert scored(torch.zeros(1), labels=3) == 3
    with pytest.raises(TypeError, match="both"):
        scored(torch.zeros(1), labels=3, targets=4)
