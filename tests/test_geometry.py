"""Photos of any size: resize/crop/pad as torchvision does it, maps put back on the original photo, and
`attnscope explain` on a folder of photos of different sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import attnscope as ats
from attnscope.cli import cli
from attnscope.cli.options import parse_fit
from attnscope.data.geometry import Fit
from attnscope.errors import InputError
from attnscope.models import checkpoint


@pytest.mark.parametrize("hw, resize, crop", [((375, 500), 224, 224), ((500, 375), 256, 224), ((31, 47), 16, 12)])
def test_resize_and_centre_crop_equal_torchvision(hw, resize, crop):
    photo = torch.rand(3, *hw)
    ours = Fit("shorter", resize, crop=(crop, crop)).place(*hw).apply(photo)
    theirs = TF.center_crop(TF.resize(photo, resize, antialias=True), [crop, crop])
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5)


def test_letterbox_keeps_everything_and_pads_with_zeros():
    photo = torch.rand(3, 30, 60)
    placement = Fit("longer", 20, pad=(20, 20)).place(30, 60)
    x = placement.apply(photo)
    assert placement.resized == (10, 20) and (placement.top, placement.left) == (5, 0)
    assert x[:, :5].abs().sum() == 0 and x[:, 15:].abs().sum() == 0
    assert torch.allclose(x[:, 5:15], TF.resize(photo, [10, 20], antialias=True), atol=1e-5)
    back = placement.invert(torch.full((1, 20, 20), 0.7))
    assert back.shape == (1, 30, 60) and torch.allclose(back, torch.full_like(back, 0.7))


def test_inverted_crop_is_nan_exactly_where_the_input_did_not_see_the_photo():
    # 4×8 photo, shorter side 2 → 2×4, centre crop 2×2 keeps resized columns 1–2 = photo columns 2–5.
    placement = Fit("shorter", 2, crop=(2, 2)).place(4, 8)
    assert placement.resized == (2, 4) and (placement.top, placement.left) == (0, -1)
    back = placement.invert(torch.full((1, 2, 2), 3.0))[0]
    seen = ~torch.isnan(back)
    assert seen.all(0).tolist() == [False, False, True, True, True, True, False, False]
    assert torch.equal(back[seen], torch.full((int(seen.sum()),), 3.0))


def test_refusals_name_the_flag():
    with pytest.raises(InputError, match="smaller than the crop"):
        Fit("shorter", 10, crop=(12, 12)).place(20, 30, "a.jpg")
    for args, message in (((None, "center", False, None), "go with --resize"),
                          (("shorter=224", None, True, None), "--resize longer=S"),
                          (("longer=224", "center", False, None), "needs its size"),
                          (("shorter=224", None, False, "224"), "--size squashes"),
                          (("taller=3", None, False, None), "shorter=S, longer=S")):
        with pytest.raises(InputError, match=message):
            parse_fit(*args)
    assert parse_fit("shorter=256", "center=224", False, None) == Fit("shorter", 256, crop=(224, 224))
    assert parse_fit("longer=64", None, True, None) == Fit("longer", 64, pad=(64, 64))


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, hw in (("wide", (40, 64)), ("tall", (72, 48))):
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[4, 8])
    return str(checkpoint.save(model, tmp_path_factory.mktemp("m") / "m.safetensors"))


def test_explain_on_photos_of_different_sizes_names_the_flags_then_draws_on_the_originals(photos, ckpt, tmp_path):
    base = ["explain", "--checkpoint", ckpt, "--images", str(photos), "--methods", "gradcam", "--quiet"]
    refused = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "no")])
    assert refused.exit_code != 0 and "--resize shorter=224 --crop center" in str(refused.exception)
    assert not (tmp_path / "no").exists()

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [*base, "--resize", "shorter=32", "--crop", "center", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resize"] == {"resize": "shorter", "size": 32, "crop": [32, 32], "pad": None}
    tall = next(e for e in manifest["images"] if e["name"] == "tall")
    assert tall["geometry"] == {"original": [72, 48], "resized": [48, 32], "offset": [-8, 0], "input": [32, 32]}
    overlay = np.asarray(Image.open(out / next(p for p in manifest["files"]["overlays"]["gradcam"] if "tall" in p)))
    photo = np.asarray(Image.open(photos / "tall.png"))
    assert overlay.shape == photo.shape  # drawn on the original photo
    assert (overlay[:10] == photo[:10]).all() and (overlay[-10:] == photo[-10:]).all()  # cropped-off: untouched
    assert math.isclose(float((overlay[20:52] != photo[20:52]).mean()), 1.0, abs_tol=0.1)  # the map covers the rest
