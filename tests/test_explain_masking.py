"""RISE against TorchRay called directly, and extremal perturbation by what its optimum must be."""

import pytest
import torch
from torch import nn

import attnscope as ats

torchray = pytest.importorskip("torchray.attribution.rise")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return ats.models.get("smallcnn", widths=[8, 16, 16]).eval()


def test_rise_equals_torchray_on_its_own_masks(model) -> None:
    """TorchRay draws the masks from torch's generator after manual_seed(seed), batch_size at a time, and scores
    with the sigmoid; it divides by n where the paper divides by n·p."""
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 3])
    ours = ats.explain(model, x, "rise", targets=t,
                       options={"rise": {"n": 96, "score": "sigmoid", "batch_size": 32, "p": 0.5}})["rise"].values
    ref = torchray.rise(model, x, seed=0, num_masks=96, num_cells=7, batch_size=32, p=0.5)[torch.arange(2), t]
    torch.testing.assert_close(ours, ref / 0.5, rtol=1e-5, atol=1e-6)


def test_rise_of_a_constant_score_is_the_constant(model) -> None:
    """s ≡ c: M = (1 / n p) Σ c M_i → c · mean(M_i) / p → c, up to the masks' sampling error."""

    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.new_full((x.shape[0], 2), 3.0) + 0 * x.sum(dim=(1, 2, 3))[:, None]

    out = ats.explain(Constant(), torch.rand(1, 3, 28, 28), "rise", targets=0,
                      options={"rise": {"n": 2000, "score": "logit", "batch_size": 500}})["rise"].values
    assert abs(float(out.mean()) - 3.0) < 0.05


class RegionEnergy(nn.Module):
    """Score: the energy Σ x² of the top-left 8 × 8 region (blurring it away lowers the score), at a logit's scale."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = (x[:, :, :8, :8] ** 2).sum(dim=(1, 2, 3)) * self.scale
        return torch.stack([energy, -energy], dim=1)


def test_extremal_perturbation_finds_the_region_the_score_reads_with_the_asked_area() -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    area = 64 / (32 * 32)  # the region's own area
    out = ats.explain(RegionEnergy(), x, "extremal", targets=0,
                      options={"extremal": {"area": area, "steps": 300, "step": 4, "sigma": 14.0, "lr": 0.1,
                                            "jitter": False}})["extremal"].values
    assert torch.allclose(out.mean(dim=(1, 2)), torch.full((2,), area), atol=0.03)  # the area constraint holds
    inside = out[:, :8, :8].sum(dim=(1, 2)) / out.sum(dim=(1, 2))
    assert bool((inside > 0.6).all()), inside  # the mass sits where the score is read (6.25 % of the image)
