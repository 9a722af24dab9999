"""Every consumer of maps takes one `how` (an `Explainer`), and a field added to it reaches the explain calls
inside with no signature edit.

The consumers are found by introspection: every public function or class of `attnscope.sanity`, `.evaluate`,
`.stream`, `.track` and `.guide` (and their modules) that takes a `how`. Each is run on a tiny model with a
subclass of `Explainer` that has one more field (`Tagged.tag`, a stand-in for the next feature); every explain
call made while it runs must be made by that value — so no consumer rebuilds an `Explainer` from the fields it
knows, or calls `explain` with keyword arguments of its own. A consumer added without a recipe here fails.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from types import SimpleNamespace

import pytest
import torch

import attnscope.explain.spec as spec
from attnscope import data, models
from attnscope.explain import Explainer

PACKAGES = ("sanity", "evaluate", "stream", "track", "guide")
REDECLARED = ("methods", "layer", "options", "batch_size", "output", "differentiable")


@dataclasses.dataclass(frozen=True, eq=False)
class Tagged(Explainer):
    """An Explainer with a field the library does not know."""

    tag: str = "untagged"


def consumers() -> dict[str, object]:
    """Qualified name → every public function or class of the consumer packages whose signature has `how`."""
    found: dict[str, object] = {}
    for package in PACKAGES:
        root = importlib.import_module(f"attnscope.{package}")
        names = [root.__name__] + [m.name for m in pkgutil.walk_packages(root.__path__, f"{root.__name__}.")]
        for name in names:
            module = importlib.import_module(name)
            for attr, obj in vars(module).items():
                if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                    continue
                if not getattr(obj, "__module__", "").startswith(f"attnscope.{package}"):
                    continue
                try:
                    params = inspect.signature(obj).parameters
                except (TypeError, ValueError):
                    continue
                if "how" in params:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_no_consumer_redeclares_the_fields_of_an_explainer() -> None:
    for name, obj in consumers().items():
        redeclared = sorted(set(inspect.signature(obj).parameters) & set(REDECLARED))
        assert not redeclared, f"{name} takes {redeclared}: they belong to its `how`"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = models.get("smallcnn", widths=[4, 8]).eval()
    ds = data.get("clutter", "test", 3, size=32, seed=1)
    samples = [ds[i] for i in range(3)]
    images = torch.stack([s.image for s in samples])
    labels = torch.tensor([s.label for s in samples])
    boxes = torch.stack([s.box for s in samples])
    return model, images, labels, boxes


def _recipes(tiny, tmp_path):
    """How to run each consumer on the tiny model with `how`; each returns nothing (the calls are what count)."""
    from attnscope import evaluate, guide, sanity, stream, track
    from attnscope.sanity import randomization, repaired

    interventions = importlib.import_module("attnscope.evaluate.interventions")
    leaderboard = importlib.import_module("attnscope.evaluate.leaderboard")  # the package exports the function too
    from attnscope.track.store import Probe

    model, x, y, boxes = tiny
    one = sanity.Randomisation(blocks=1)
    same = sanity.Comparison(("spearman_abs",), calibration=())
    cheap = evaluate.Settings(step=256, batch_size=64, perturbations=1, calibration=())
    maps_of = None

    def randomise(how):
        nonlocal maps_of
        maps_of = lambda work, layer: {k: v.values for k, v in how.replace(layer=layer)(work, x, y).items()}  # noqa: E731
        randomization.randomise(model, x, maps_of, how, "cascading", one, same)

    def fit_tracker(how):
        tracker = track.FitTracker(how, probe=Probe(x, y, {}), every=None)
        run = SimpleNamespace(out=tmp_path / "fit", model=model, epoch=0, step=0, train_data=[0] * 4, test_data=[0] * 4,
                              world=SimpleNamespace(size=1, main=True),
                              config=SimpleNamespace(resume=False, seed=0, batch_size=2))
        tracker.on_fit_start(run)

    scenes = lambda: interventions.clutter_scenes(data.get("clutter", "test", 2, size=32, seed=1), 2)  # noqa: E731
    return {
        "attnscope.sanity.randomization.model_randomization":
            lambda how: sanity.model_randomization(model, x, how, y, randomisation=one, comparison=same),
        "attnscope.sanity.randomization.data_randomization":
            lambda how: sanity.data_randomization(model, model, x, how, y, comparison=same),
        "attnscope.sanity.randomization.randomise": randomise,
        "attnscope.sanity.repaired.smprt":
            lambda how: sanity.smprt(model, x, how, y, samples=2, randomisation=one, comparison=same),
        "attnscope.sanity.repaired.emprt":
            lambda how: sanity.emprt(model, x, how, y, bins=5, randomisation=one,
                                     comparison=sanity.Comparison(calibration=())),
        "attnscope.sanity.repaired.random_logit": lambda how: sanity.random_logit(model, x, how, y, comparison=same),
        "attnscope.sanity.repaired.smoothed_maps":
            lambda how: repaired.smoothed_maps(model, x, repaired.noise_draws(x, 2), how, y),
        "attnscope.evaluate.leaderboard.leaderboard":
            lambda how: evaluate.leaderboard(model, x, y, boxes, None, how, ["pointing", "max_sensitivity"], cheap),
        "attnscope.evaluate.leaderboard.image_scores":
            lambda how: leaderboard.image_scores(model, x, y, boxes, None, how, ["sparseness"], cheap),
        "attnscope.evaluate.leaderboard.estimate":
            lambda how: evaluate.estimate(model, x, y, boxes, None, how, ["sparseness"], cheap),
        "attnscope.evaluate.leaderboard.rows_of":
            lambda how: [e(model, x, y) for e in leaderboard.rows_of(how, model).values()],
        "attnscope.evaluate.leaderboard.explainers":
            lambda how: [fn(x, y) for _, fn in leaderboard.explainers(model, how, ()).values()],
        "attnscope.evaluate.leaderboard.joint_explainer":
            lambda how: leaderboard.joint_explainer(model, how, ())(x, y),
        "attnscope.evaluate.robustness.robustness": lambda how: evaluate.robustness(model, x, how, y, n=1),
        "attnscope.evaluate.interventions.interventions":
            lambda how: interventions.interventions(model, scenes(), how, calibration=()),
        "attnscope.stream.explain.explain_dataset":
            lambda how: stream.explain_dataset(model, stream.NamedData("clutter", 2, 0), tmp_path / "ex", how,
                                               streaming=stream.Streaming(2)),
        "attnscope.stream.bench.bench_dataset":
            lambda how: stream.bench_dataset(model, stream.NamedData("clutter", 2, 0), tmp_path / "bench", how,
                                             metrics="sparseness", settings=cheap),
        "attnscope.track.tracker.AttentionTracker":
            lambda how: track.AttentionTracker(tmp_path / "track", (x, y), how).epoch_end(model, 0, 0),
        "attnscope.track.fit.FitTracker": fit_tracker,
        "attnscope.track.tracker.checked_settings": lambda how: track.tracker.checked_settings(how, None, "label")(
            model, x, y),
        "attnscope.guide.losses.cam": lambda how: guide.cam(model, x, y, boxes, how),
    }


def test_a_new_field_reaches_every_consumer_without_a_signature_edit(tiny, tmp_path, monkeypatch) -> None:
    recipes = _recipes(tiny, tmp_path)
    found = consumers()
    assert sorted(found) == sorted(recipes), "a consumer of maps without a recipe here (or a recipe for none)"
    calls: list[Explainer] = []
    run = spec.explain_with
    monkeypatch.setattr(spec, "explain_with", lambda how, *a: calls.append(how) or run(how, *a))
    for name, recipe in recipes.items():
        calls.clear()
        how = Tagged(("gradcam",), tag=name)
        recipe(how)
        assert calls, f"{name} explained nothing"
        lost = [type(c).__name__ for c in calls if not (isinstance(c, Tagged) and c.tag == name)]
        assert not lost, f"{name} made explain calls without the given `how` ({lost}): a new field would not reach them"
