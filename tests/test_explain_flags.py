"""Maps that say nothing are flagged by `attnscope explain`: on the terminal, in the manifest and on the overlay."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

import attnscope as ats
from attnscope.cli import cli
from attnscope.models import checkpoint


def test_a_zero_gradient_is_flagged_on_the_terminal_in_the_manifest_and_on_the_overlay(tmp_path):
    model = ats.models.get("smallcnn", widths=[4, 8])
    with torch.no_grad():
        model.fc.weight.zero_()  # every logit is its bias: the target's gradient is zero everywhere
    ckpt = checkpoint.save(model, tmp_path / "zero.safetensors")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["explain", "--checkpoint", str(ckpt), "--images", "clutter", "--n", "2",
                                      "--methods", "saliency,inputxgrad", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "saliency: 2 of 2 maps all zero: the target's gradient is zero (clutter-0000, clutter-0001)" in \
        " ".join(result.output.split())
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("saliency", "inputxgrad"):
        assert manifest["methods"][name]["flags"] == {"all zero": ["clutter-0000", "clutter-0001"]}
    # inputxgrad is signed, so an all-zero map is transparent: the overlay is the image but for the flag's band.
    overlay = np.asarray(Image.open(out / manifest["files"]["overlays"]["inputxgrad"][0]))
    image = ats.data.get("clutter", "test", 2)[0].image
    photo = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert (overlay[16:] == photo[16:]).all() and (overlay[:12] != photo[:12]).any()
