"""The pooling baselines of LTPA (models/pooling.py): each is the model it claims to be, checked against
the models it is built from with the same weights."""

from __future__ import annotations

import pytest
import torch

import attnscope as ats
from attnscope.errors import InputError

X = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_ltpa_without_g_equals_pc_softmax_ltpa_with_the_same_weights() -> None:
    """⟨u, l + g⟩ under a softmax over positions ignores g, so dropping g changes no logit and no map."""
    torch.manual_seed(0)
    full = ats.models.get("ltpa", widths=[8, 16, 16, 32], estimators=2).eval()
    nog = ats.models.get("ltpa-nog", widths=[8, 16, 16, 32], estimators=2).eval()
    missing, unexpected = nog.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(k.startswith(("global_fc", "stages.3", "estimators.0.project_g",
                                             "estimators.1.project_g")) for k in unexpected)
    (a, maps_a), (b, maps_b) = full(X, return_attention=True), nog(X, return_attention=True)
    assert torch.allclose(a, b, atol=1e-5)
    for k in maps_a:
        assert torch.allclose(maps_a[k], maps_b[k], atol=1e-6)
    assert sum(p.numel() for p in nog.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(InputError, match="compatibility='pc'"):
        ats.models.get("ltpa-nog", compatibility="dp")


def test_attention_pooling_with_u_zero_is_average_pooling() -> None:
    """u = 0 scores every position alike: a = 1/hw, and the head is SmallCNN's GAP + linear."""
    torch.manual_seed(1)
    att = ats.models.get("pooling-cnn", widths=[8, 16, 32], pool="attention").eval()
    gap = ats.models.get("smallcnn", widths=[8, 16, 32]).eval()
    gap.load_state_dict({k: v for k, v in att.state_dict().items() if not k.startswith("estimators")})
    with torch.no_grad():
        att.estimators[0].u.weight.zero_()
    logits, maps = att(X, return_attention=True)
    assert torch.allclose(logits, gap(X), atol=1e-5)
    assert torch.allclose(maps["features.2"], torch.full((3, 8, 8), 1 / 64))
    e = ats.explain(att, X, "ltpa")  # the intrinsic method reads it like LTPA
    assert torch.allclose(e["ltpa/features.2"].lowres, maps["features.2"])


def test_gmp_cnn_takes_the_maximum_over_positions() -> None:
    m = ats.models.get("pooling-cnn", widths=[8, 16], pool="max").eval()
    features = m.features(X)
    assert torch.allclose(m(X), m.fc(features.amax((2, 3))), atol=1e-6)
    with pytest.raises(InputError, match="no attention"):
        m(X, return_attention=True)
    with pytest.raises(InputError, match="pool must be"):
        ats.models.get("pooling-cnn", pool="median")
