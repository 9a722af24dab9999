"""Maps computed by hand on tiny models with fixed weights.

`TwoChannel`: A_0 = ReLU(x), A_1 = ReLU(2x) (a 1×1 conv), global average pooling, logits
y_c = Σ_k W_ck mean(A_k) with W = [[1, -1], [0.5, 1]]. For x = [[1, 2], [3, -1]]:
A_0 = [[1, 2], [3, 0]], A_1 = 2 A_0, y = (-1.5, 3.75), and ∂y_c/∂A_k,ij = W_ck / 4.
"""

import math

import pytest
import torch
from torch import nn

import attnscope as ats

X = torch.tensor([[[[1.0, 2.0], [3.0, -1.0]]]])  # (1, 1, 2, 2)
A0 = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])  # (1, 2, 2)


class TwoChannel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(1, 2, 1, bias=False)
        conv.weight.data = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
        self.features = nn.Sequential(conv, nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        self.fc.weight.data = torch.tensor([[1.0, -1.0], [0.5, 1.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def run(method: str, target: int = 1, **options) -> ats.AttentionMap:
    return ats.explain(
        TwoChannel(),
        X,
        method,
        targets=target,
        layer="features",
        options={method: options} if options else None,
    )[method]


def test_model_is_as_documented() -> None:
    torch.testing.assert_close(TwoChannel()(X), torch.tensor([[-1.5, 3.75]]))


def test_cam_is_the_head_weighted_sum() -> None:
    # class 1: 0.5 A_0 + 1 A_1 = 2.5 A_0
    torch.testing.assert_close(run("cam").values, 2.5 * A0)
    # class 0: A_0 - A_1 = -A_0, no ReLU in CAM
    torch.testing.assert_close(run("cam", target=0).values, -A0)


def test_gradcam_weights_are_mean_gradients() -> None:
    # α = W_1k / 4 = (0.125, 0.25): 0.125 A_0 + 0.25 A_1 = 0.625 A_0
    torch.testing.assert_close(run("gradcam").values, 0.625 * A0)
    # class 0: α = (0.25, -0.25) → -0.25 A_0; ReLU'd to zero unless relu=False
    torch.testing.assert_close(run("gradcam", target=0).values, torch.zeros(1, 2, 2))
    torch.testing.assert_close(run("gradcam", target=0, relu=False).values, -0.25 * A0)


def test_gradcam_plus_plus_alpha() -> None:
    # g_k = W_1k / 4 (constant over positions), S_k = Σ A_k = (6, 12):
    # α_k = g² / (2 g² + S_k g³) = 1 / (2 + S_k g) = (1 / 2.75, 1 / 5); w_k = 4 α_k g_k
    w0, w1 = 4 * 0.125 / 2.75, 4 * 0.25 / 5
    torch.testing.assert_close(run("gradcam++").values, (w0 + 2 * w1) * A0)
    # exp_score scales by exp(y_1) = exp(3.75)
    torch.testing.assert_close(run("gradcam++", exp_score=True).values, math.exp(3.75) * (w0 + 2 * w1) * A0)


def test_gradient_cams_on_a_gap_head() -> None:
    # with a GAP + linear head the gradient is constant per channel: XGrad-CAM and HiResCAM equal Grad-CAM
    for name in ("xgradcam", "hirescam", "layercam"):
        torch.testing.assert_close(run(name).values, 0.625 * A0)
    # LayerCAM for class 0 keeps only the positive gradient of channel 0: 0.25 A_0
    torch.testing.assert_close(run("layercam", target=0).values, 0.25 * A0)
    torch.testing.assert_close(run("hirescam", target=0, relu=False).values, -0.25 * A0)


def test_eigencam_on_a_rank_one_layer() -> None:
    # the (hw, C) matrix is [a, 2a] with a = vec(A_0): V_1 = (1, 2)/√5, projection = √5 A_0
    torch.testing.assert_close(run("eigencam").values, math.sqrt(5) * A0)


def test_saliency_inputxgrad_occlusion_and_ablation() -> None:
    # y_1 = 2.5 mean(ReLU(x)) → ∂y_1/∂x = 0.625 where x > 0
    grad = torch.tensor([[[0.625, 0.625], [0.625, 0.0]]])
    torch.testing.assert_close(run("saliency").values, grad)
    torch.testing.assert_close(run("inputxgrad").values, grad * X[:, 0])
    # occluding one pixel removes 2.5 ReLU(x_p) / 4 from y_1
    torch.testing.assert_close(run("occlusion", window=1, stride=1).values, 0.625 * A0)
    # ablating A_0 leaves y = 3 (w_0 = 0.75 / 3.75); ablating A_1 leaves 0.75 (w_1 = 3 / 3.75)
    torch.testing.assert_close(run("ablationcam").values, (0.2 + 2 * 0.8) * A0)


def test_scorecam_duplicate_masks_and_weights() -> None:
    # A_1 = 2 A_0: both channels give the mask H = A_0 / 3, one masked pass serves both.
    # x ⊙ H = [[1/3, 4/3], [3, 0]]: y_1' = 2.5 · (14/3) / 4 = 35/12, y_0' = -(14/3) / 4 = -7/6
    p1 = 1 / (1 + math.exp(-7 / 6 - 35 / 12))
    torch.testing.assert_close(run("scorecam").values, 3 * p1 * A0)
    # channel softmax of two equal scores: (0.5, 0.5) → 0.5 A_0 + 0.5 A_1
    torch.testing.assert_close(run("scorecam", weights="channel-softmax").values, 1.5 * A0)


class Kink(nn.Module):
    """y = mean over two pixels of ReLU(x - 1): the gradient along the IG path jumps at x = 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.conv.weight.data.fill_(1.0)
        self.conv.bias.data.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))  # (B, 1)


@pytest.mark.parametrize(
    "rule, expected",
    [
        # pixel x = 3 on the path α·3: ∂y/∂x = 1/2 · 1[3α > 1]; IG = 3 · mean over the rule's α
        ("riemann-middle", 3 * 0.5 * 2 / 3),  # α = 1/6, 1/2, 5/6 → indicators 0, 1, 1
        ("riemann-left", 3 * 0.5 * 1 / 3),  # α = 0, 1/3, 2/3 → 0, 0 (ReLU'(0) = 0), 1
        ("riemann-right", 3 * 0.5 * 2 / 3),  # α = 1/3, 2/3, 1 → 0, 1, 1
    ],
)
def test_integrated_gradients_by_hand(rule: str, expected: float) -> None:
    x = torch.tensor([[[[3.0, 0.5]]]])
    ig = ats.explain(Kink(), x, "ig", targets=0, options={"ig": {"steps": 3, "rule": rule}})["ig"].values
    torch.testing.assert_close(ig, torch.tensor([[[expected, 0.0]]]))


def test_integrated_gradients_converges_to_completeness_by_hand() -> None:
    # exact IG: pixel 0 gets 3 · 1/2 · 2/3 = 1 = y(x) - y(0); pixel 1 never crosses the kink
    x = torch.tensor([[[[3.0, 0.5]]]])
    ig = ats.explain(Kink(), x, "ig", targets=0, options={"ig": {"steps": 64}})["ig"].values
    assert abs(float(ig[0, 0, 0]) - 1.0) < 0.01 and float(ig[0, 0, 1]) == 0.0


class Guided(nn.Module):
    """y = mean(ReLU(2 - ReLU(x))): a positive gradient turns negative at the inner ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.ReLU(inplace=True)
        self.flip = nn.Conv2d(1, 1, 1)
        self.flip.weight.data.fill_(-1.0)
        self.flip.bias.data.fill_(2.0)
        self.outer = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.flip(self.inner(x))).mean(dim=(2, 3))


def test_guided_backprop_by_hand() -> None:
    # x = (1, 3, -1): ReLU(x) = (1, 3, 0), 2 - that = (1, -1, 2), y = mean(1, 0, 2) = 1
    x = torch.tensor([[[[1.0, 3.0, -1.0]]]])
    maps = ats.explain(
        Guided(), x, ("saliency", "guided-backprop"), targets=0, options={"saliency": {"reduce": "sum"}}
    )
    # plain: 1/3 · 1[2 - h > 0] · (-1) · 1[x > 0] = (-1/3, 0, 0)
    torch.testing.assert_close(maps["saliency"].values, torch.tensor([[[-1 / 3, 0.0, 0.0]]]))
    # guided: the -1/3 reaching the inner ReLU is negative, so nothing passes
    torch.testing.assert_close(maps["guided-backprop"].values, torch.zeros(1, 1, 3))


def test_cam_refuses_a_head_that_is_not_gap_plus_linear_over_the_layer():
    """DenseNet applies a ReLU between `features` and its pooling; a ViT's head reads the CLS token."""
    from attnscope import models
    from attnscope.errors import NotApplicableError

    x = torch.rand(2, 3, 64, 64)
    for model in (models.get("densenet121", num_classes=4), models.get("vit")):
        with pytest.raises(NotApplicableError, match="check_head=False"):
            ats.explain(model, x, "cam")
    forced = ats.explain(models.get("densenet121", num_classes=4), x, "cam", options={"cam": {"check_head": False}})
    assert forced["cam"].lowres.shape == (2, 2, 2)
    exact = models.get("smallcnn", widths=[4, 8]).eval()
    m = ats.explain(exact, x, "cam", targets=1)["cam"]
    # Exactness that the check relies on: mean of the CAM + bias is the logit.
    torch.testing.assert_close(m.lowres.mean((1, 2)) + exact.fc.bias[1], exact(x)[:, 1])
