"""The one leaderboard: its cells are the metrics' own numbers, its shared passes agree with
separate calls, columns without ground truth are left out, and the estimate covers what runs."""

import pytest
import torch

from attnscope import data, explain, metrics, models
from attnscope.errors import InputError, UnknownNameError
from attnscope.evaluate import Mosaics, Settings, class_probability, estimate, leaderboard, robustness
from attnscope.evaluate.columns import COLUMNS, GROUPS, select
from attnscope.explain import Explainer
from attnscope.maps import normalize


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = models.get("smallcnn", widths=[4, 8]).eval()
    ds = data.get("clutter", "test", 4, size=32, seed=1)
    samples = [ds[i] for i in range(4)]
    images = torch.stack([s.image for s in samples])
    labels = torch.tensor([s.label for s in samples])
    boxes = torch.stack([s.box for s in samples])
    masks = torch.stack([s.mask for s in samples])
    return model, images, labels, boxes, masks


def _cheap(**kw):
    return Settings(step=256, batch_size=64, **kw)


def test_cells_are_the_metrics_own_numbers(setup):
    model, images, labels, boxes, masks = setup
    board = leaderboard(model, images, labels, boxes, masks, ["gradcam", "saliency"],
                        ["pointing", "mass_mask", "deletion_zero", "pixel_flip_aopc", "sparseness"],
                        _cheap(calibration=("random",), keep_maps=True))
    assert [r["method"] for r in board.rows] == ["gradcam", "saliency", "random"]
    assert [r["kind"] for r in board.rows] == ["cam", "gradient", "calibration"]
    f = class_probability(model, labels)
    for row in board.rows[:2]:
        maps = explain(model, images, row["method"], labels)[row["method"]].values
        assert torch.allclose(board.maps[row["method"]], maps)
        assert row["pointing"] == pytest.approx(metrics.pointing_game(maps, boxes).mean().item())
        assert row["mass_mask"] == pytest.approx(metrics.relevance_mass(maps, masks).mean().item())
        curve = metrics.deletion_curve(maps, images, f, "zero", step=256)
        assert row["deletion_zero"] == pytest.approx(metrics.auc(curve).mean().item())
        assert row["pixel_flip_aopc"] == pytest.approx(metrics.aopc(curve).mean().item())
        assert row["sparseness"] == pytest.approx(metrics.sparseness(maps).mean().item())
        assert list(row)[-1] == "ms_per_image" and row["ms_per_image"] > 0


def test_robustness_columns_share_one_explanation_and_agree_with_separate_calls(setup):
    model, images, labels, boxes, masks = setup
    settings = _cheap(perturbations=3, radius=0.05, seed=2, calibration=())
    names = ["max_sensitivity", "local_lipschitz", "ris"]
    board = leaderboard(model, images, labels, boxes, masks, how=["gradcam", "saliency"], metrics=names,
                        settings=settings)
    from attnscope.evaluate.robustness import perturb

    perturbed = perturb(images, 3, "uniform", 0.05, 2)
    for row in board.rows:
        alone = robustness(model, images, row["method"], labels, names, perturbed=perturbed)[row["method"]]
        for name in names:
            assert row[name] == pytest.approx(metrics.mean_ci(alone[name])[0], rel=1e-5)


def test_variants_name_their_rows_and_keep_their_options(setup):
    model, images, labels, boxes, masks = setup
    rows = {"relu": Explainer("gradcam", options={"gradcam": {"relu": True}}),
            "signed": Explainer("gradcam", options={"gradcam": {"relu": False}})}
    board = leaderboard(model, images, labels, boxes, how=rows, metrics=["energy_box", "energy_box_norm"],
                        settings=Settings(calibration=()))
    rows = {r["method"]: r for r in board.rows}
    assert set(rows) == {"relu", "signed"}
    signed = explain(model, images, "gradcam", labels, options={"gradcam": {"relu": False}})["gradcam"].values
    assert rows["signed"]["energy_box"] == pytest.approx(metrics.energy_in_box(signed, boxes).mean().item())
    norm = metrics.energy_in_box(normalize(signed), boxes).mean().item()
    assert rows["signed"]["energy_box_norm"] == pytest.approx(norm)
    with pytest.raises(InputError, match="one method"):
        leaderboard(model, images, labels, boxes, how={"a": Explainer(("gradcam", "saliency"))})


def test_columns_without_ground_truth_are_left_out(setup):
    model, images, labels, *_ = setup
    board = leaderboard(model, images, labels, how="saliency", metrics="localisation,complexity",
                        settings=Settings(calibration=()))
    assert set(board.skipped) == {c for c in COLUMNS if COLUMNS.get(c).group == "localisation"}
    assert board.columns == ["sparseness", "complexity", "effective_complexity", "entropy"]
    with pytest.raises(InputError, match="no metric"):
        leaderboard(model, images, labels, how="saliency", metrics="localisation")


def test_focus_on_mosaics(setup):
    model, *_ = setup
    built = data.mosaics(data.get("clutter", "test", 40, size=32, seed=1), 3)
    mosaics = Mosaics(built.images, built.labels, built.quadrants)
    images = built.images[:, :, :32, :32].contiguous()  # any images: focus reads the mosaics
    board = leaderboard(model, images, built.labels, how="gradcam", metrics=["focus", "sparseness"],
                        settings=Settings(calibration=()), mosaics=mosaics)
    maps = explain(model, built.images, "gradcam", built.labels)["gradcam"].values
    assert board.rows[0]["focus"] == pytest.approx(metrics.focus(maps, built.quadrants).mean().item())


def test_select_reads_groups_defaults_and_names():
    every = sorted(COLUMNS.names(), key=lambda c: GROUPS.index(COLUMNS.get(c).group))  # group by group
    assert select("all") == every
    assert select("default") == [c for c in every if COLUMNS.get(c).default]
    assert select("complexity,pointing") == ["sparseness", "complexity", "effective_complexity", "entropy",
                                             "pointing"]
    assert set(GROUPS) == {COLUMNS.get(c).group for c in COLUMNS}
    with pytest.raises(UnknownNameError, match="metric 'pointng'"):
        select("pointng")


def test_estimate_covers_the_groups_that_run(setup):
    model, images, labels, boxes, masks = setup
    guess = estimate(model, images, labels, boxes, masks, "gradcam", ["deletion_zero", "sparseness", "max_sensitivity"],
                     _cheap(perturbations=2, calibration=()))
    assert guess.measured_on == 1 and guess.explain > 0  # a probe of one image, scaled to the 4
    assert guess.groups["faithfulness"] > 0 and guess.groups["robustness"] > 0 and guess.groups["localisation"] == 0
    assert guess.total == pytest.approx(guess.explain + sum(guess.groups.values()))


def test_methods_that_do_not_apply_are_named_with_why():
    from attnscope import models
    from attnscope.evaluate import applicable_methods, not_applicable

    cnn = models.get("smallcnn")
    missing = not_applicable(cnn, ("transformer", "intrinsic", "cam"))
    assert {"rollout", "ltpa", "sat"} <= missing.keys() and "gradcam" not in missing
    assert "attention layers" in missing["rollout"]
    assert set(missing).isdisjoint(applicable_methods(cnn, ("transformer", "intrinsic", "cam")))


def test_map_independent_columns_run_their_passes_once_per_image_for_all_maps(setup):
    """Faithfulness correlation's subsets and infidelity's perturbations do not depend on the map: the model sees
    runs + 1 and n + 1 images per image for all rows together (5 maps here), and the values are those of one
    map at a time."""
    model, images, labels, boxes, masks = setup
    seen = []
    handle = model.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[0]))
    try:
        methods = ["gradcam", "saliency", "inputxgrad"]
        board = leaderboard(model, images[:2], labels[:2], how=methods, metrics=["faith_corr", "infidelity"],
                            settings=_cheap())
    finally:
        handle.remove()
    explained = 3 * 2 * 2  # the scorers' class check and each method's shared pass, 2 images
    assert sum(seen) - explained <= 2 * ((100 + 1) + (10 + 1)) + 2 * 2  # + the scorers' checks of each image
    from attnscope import draws

    for row in board.rows[:3]:
        maps = explain(model, images[:2], row["method"], labels[:2])[row["method"]].values
        one = [metrics.faithfulness_correlation(maps[i : i + 1], images[i : i + 1],
                                                class_probability(model, labels[i : i + 1]),
                                                seed=draws.image_seed(0, i), batch_size=64).item() for i in range(2)]
        assert row["faith_corr"] == pytest.approx(sum(one) / 2)
