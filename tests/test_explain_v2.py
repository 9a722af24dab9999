"""Engine v2: methods as pure functions (every CAM by hand on made-up tensors), registration from signatures,
the `Explanation` with its logits, K targets per image, differentiable maps, forwards per command path,
and the defects fixed on the way."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import attnscope as ats
from attnscope.cli import cli
from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import cam, perturbation
from attnscope.explain.context import Oracle
from attnscope.explain.method import register_method
from attnscope.explain.targets import Target
from attnscope.models import checkpoint
from attnscope.models.smallcnn import SmallCNN
from attnscope.registry import METHODS

# Hand-made layer: A_0 = [[1, 2], [3, 4]], A_1 = [[1, 1], [1, 0]]; G_0 = 1 everywhere, G_1 = [[-2, 1], [0, 1]].
A = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
G = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[-2.0, 1.0], [0.0, 1.0]]]])


def small(**cfg) -> nn.Module:
    return ats.models.get("smallcnn", **cfg)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None]


# --- every CAM on hand-made tensors, no model ----------------------------------------------------------------------

def test_gradcam_by_hand():
    # α = mean G = (1, 0): the map is A_0
    torch.testing.assert_close(cam.gradcam(A, G), t([[1, 2], [3, 4]]))


def test_hirescam_and_layercam_by_hand():
    # Σ_k G_k ⊙ A_k = A_0 + [[-2, 1], [0, 0]]; LayerCAM keeps only G⁺: A_0 + [[0, 1], [0, 0]]
    torch.testing.assert_close(cam.hirescam(A, G, relu=False), t([[-1, 3], [3, 4]]))
    torch.testing.assert_close(cam.hirescam(A, G), t([[0, 3], [3, 4]]))
    torch.testing.assert_close(cam.layercam(A, G), t([[1, 3], [3, 4]]))


def test_xgradcam_by_hand():
    # w_0 = Σ A_0 G_0 / Σ A_0 = 10 / 10 = 1; w_1 = (-2 + 1 + 0 + 0) / 3 = -1/3
    torch.testing.assert_close(cam.xgradcam(A, G), t([[2 / 3, 5 / 3], [8 / 3, 4]]))


def test_gradcam_plus_plus_by_hand():
    # α = g² / (2g² + Σ A · g³). Channel 0: α = 1 / 12 at every position, w_0 = 4 / 12 = 1/3.
    # Channel 1 (Σ A_1 = 3): at g = 1 α = 1/5 (twice), at g = -2 ReLU(g) = 0, at g = 0 α = 0: w_1 = 2/5.
    expected = A[0, 0] / 3 + 2 * A[0, 1] / 5
    torch.testing.assert_close(cam.gradcam_pp(A, G, torch.zeros(1)), expected[None])
    # exp_score scales the weights by exp(y)
    torch.testing.assert_close(cam.gradcam_pp(A, G, torch.tensor([math.log(2.0)]), exp_score=True), 2 * expected[None])


def test_cam_by_hand_and_its_head_check():
    w, b = torch.tensor([[0.5, -1.0]]), torch.tensor([0.25])  # M = 0.5 A_0 − A_1 = [[-0.5, 0], [0.5, 2]], mean 0.5
    torch.testing.assert_close(cam.cam(A, w, b, torch.tensor([0.75]), "layer"), t([[-0.5, 0], [0.5, 2]]))
    with pytest.raises(NotApplicableError, match="off by up to 0.25"):
        cam.cam(A, w, b, torch.tensor([1.0]), "layer")
    torch.testing.assert_close(cam.cam(A, w, b, torch.tensor([1.0]), "layer", check_head=False, relu=True),
                               t([[0, 0], [0.5, 2]]))


def test_eigencam_by_hand():
    # positions × channels = [[1, 2], [2, 4], [3, 6], [0, 0]]: rank one, V_1 = (1, 2) / √5, map = x · V_1
    acts = torch.tensor([[1.0, 2.0, 3.0, 0.0], [2.0, 4.0, 6.0, 0.0]]).view(1, 2, 2, 2)
    r5 = math.sqrt(5)
    torch.testing.assert_close(cam.eigencam(acts), t([[r5, 2 * r5], [3 * r5, 0]]))


class Summing(nn.Module):
    """logits = (Σ x, 0) per image: the score of a masked input is the sum of the mask (for x = 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _oracle(model: nn.Module, images: torch.Tensor, layer: nn.Module | None = None) -> Oracle:
    return Oracle(model, images, Target(torch.zeros(len(images), dtype=torch.long)), 1, layer, None, None, None)


def test_scorecam_by_hand():
    # masks: min–max of A_0 = [[0, 1/3], [2/3, 1]] (sum 2), of A_1 = A_1 (sum 3); on x = 1 the masked scores
    # are those sums, so w_k = softmax((s_k, 0))_0 = σ(s_k).
    oracle = _oracle(Summing(), torch.ones(1, 1, 2, 2))
    got = perturbation.scorecam(A, oracle)
    sig = lambda v: 1 / (1 + math.exp(-v))
    torch.testing.assert_close(got, (sig(2) * A[0, 0] + sig(3) * A[0, 1])[None])
    raw = perturbation.scorecam(A, oracle, weights="channel-softmax")  # softmax over channels of (2, 3)
    w = torch.tensor([2.0, 3.0]).softmax(0)
    torch.testing.assert_close(raw, (w[0] * A[0, 0] + w[1] * A[0, 1])[None])


class Head(nn.Module):
    """The input *is* the layer's output: logits = (mean A_0 + 2 mean A_1, 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.layer(x)
        s = a[:, 0].mean((1, 2)) + 2 * a[:, 1].mean((1, 2))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_ablationcam_by_hand():
    # y = 2.5 + 2 · 0.75 = 4; without A_0: 1.5, w_0 = 2.5 / 4; without A_1: 2.5, w_1 = 1.5 / 4
    model = Head()
    for tail in ("auto", "split", "shared", "repeat"):
        got = perturbation.ablationcam(A, torch.tensor([4.0]), _oracle(model, A, model.layer), tail=tail)
        torch.testing.assert_close(got.values, (0.625 * A[0, 0] + 0.375 * A[0, 1])[None])
        assert got.meta["tail"] == ("split" if tail == "auto" else tail)


# --- registration --------------------------------------------------------------------------------------------------

def test_registration_derives_what_a_method_reads_from_its_signature():
    def doubled(acts: torch.Tensor, grads: torch.Tensor, *, factor: float = 2.0) -> torch.Tensor:
        return factor * cam.gradcam(acts, grads)

    register_method("test-doubled", "cam")(doubled)
    try:
        spec = METHODS.get("test-doubled")
        assert spec.inputs == ("acts", "grads") and spec.needs == {"layer", "layer_grad"} and spec.differentiable
        model, x = small(), torch.rand(2, 3, 32, 32)
        out = ats.explain(model, x, ("gradcam", "test-doubled"), options={"test-doubled": {"factor": 3}})
        torch.testing.assert_close(out["test-doubled"].values, 3 * out["gradcam"].values)
    finally:
        METHODS._items.pop("test-doubled")


def test_registration_refuses_unknown_inputs_and_options_without_defaults():
    with pytest.raises(ValueError, match="reads 'activations', which the engine does not provide"):
        register_method("test-bad", "cam")(lambda activations: activations)
    with pytest.raises(ValueError, match="option 'k' needs a default"):
        register_method("test-bad", "cam")(lambda acts, *, k: acts)
    with pytest.raises(ValueError, match="kind must be one of"):
        register_method("test-bad", "other")
    assert "test-bad" not in METHODS


@pytest.mark.parametrize("value, ok", [(False, False), ("False", False), ("TRUE", True), ("false", False),
                                       ("no", None), (1, None), (None, None)])
def test_boolean_options_are_checked(value, ok):
    torch.manual_seed(1)
    model, x = small(widths=[4, 8]), torch.rand(2, 3, 16, 16)
    if ok is None:
        with pytest.raises(InputError, match="option gradcam.relu must be bool"):
            ats.explain(model, x, "gradcam", options={"gradcam": {"relu": value}})
        return
    got = ats.explain(model, x, "gradcam", options={"gradcam": {"relu": value}})["gradcam"]
    ref = ats.explain(model, x, "gradcam", options={"gradcam": {"relu": ok}})["gradcam"]
    assert got.meta["relu"] is ok and torch.equal(got.values, ref.values)
    assert bool((got.values < 0).any()) is (not ok)  # "False" really turns the ReLU off


def test_option_types_and_containers_are_checked():
    model, x = small(widths=[4, 8]), torch.rand(1, 3, 16, 16)
    with pytest.raises(InputError, match="option ig.steps must be int"):
        ats.explain(model, x, "ig", options={"ig": {"steps": 4.5}})
    with pytest.raises(InputError, match="options for 'ig' must be a dict"):
        ats.explain(model, x, "ig", options={"ig": 4})
    with pytest.raises(InputError, match="options must be a dict"):
        ats.explain(model, x, "ig", options=[("ig", {})])
    with pytest.raises(InputError, match="steps=1000000000000 is above the limit"):
        ats.explain(model, x, "ig", options={"ig": {"steps": 10**12}})
    ok = ats.explain(model, x, "occlusion", options={"occlusion": {"window": [8, 4], "stride": 4}})
    assert ok["occlusion"].meta["window"] == [8, 4]


# --- the Explanation -----------------------------------------------------------------------------------------------

def test_explanation_carries_the_shared_pass_logits_and_targets():
    torch.manual_seed(0)
    model, x = small(widths=[4, 8]).eval(), torch.rand(5, 3, 16, 16)
    out = ats.explain(model, x, ("gradcam", "saliency"), batch_size=2)
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(out.logits, logits)
    assert torch.equal(out.targets, logits.argmax(1)) and torch.equal(out.predicted, logits.argmax(1))
    assert isinstance(out, dict) and set(out) == {"gradcam", "saliency"}


@pytest.mark.parametrize("methods", [("explain",), ()])
def test_empty_or_bad_method_lists_raise(methods):
    with pytest.raises((InputError, KeyError)):
        ats.explain(small(), torch.rand(1, 3, 16, 16), methods if methods else ())
    with pytest.raises(InputError, match="methods must be"):
        ats.explain(small(), torch.rand(1, 3, 16, 16), None)


# --- K targets per image -------------------------------------------------------------------------------------------

MULTI = ("gradcam", "gradcam++", "cam", "saliency", "inputxgrad", "guided-backprop", "guided-gradcam", "ig",
         "scorecam", "ablationcam", "occlusion")
MULTI_FAST = {"ig": {"steps": 4}, "occlusion": {"window": 8, "stride": 8}, "scorecam": {"batch_size": 16}}


def test_k_targets_equal_k_separate_calls_and_share_one_forward():
    torch.manual_seed(0)
    model, x = small(widths=[4, 8], num_classes=6).eval(), torch.rand(3, 3, 16, 16)
    top = torch.tensor([[0, 3], [5, 1], [2, 2]])
    opts = {k: v for k, v in MULTI_FAST.items() if k in MULTI}
    both = ats.explain(model, x, MULTI, targets=top, options=opts)
    assert torch.equal(both.targets, top)
    for k in range(2):
        one = ats.explain(model, x, MULTI, targets=top[:, k], options=opts)
        for name in MULTI:
            assert both[name].values.shape == (3, 2, 16, 16) and both[name].multi
            column = both[name][:, k]
            assert column.values.shape == (3, 16, 16) and torch.equal(column.targets, top[:, k])
            torch.testing.assert_close(column.values, one[name].values, rtol=1e-5, atol=1e-7)


def test_k_gradient_cams_cost_one_forward_and_callable_k_targets():
    calls = []
    model = small(widths=[4, 8], num_classes=6).eval()
    model.register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(2, 3, 16, 16)
    top5 = lambda logits: logits.topk(5, dim=1).values  # (B, 5) scores: the five best classes
    out = ats.explain(model, x, ("gradcam", "layercam", "saliency"), targets=top5, layer="features")
    assert len(calls) == 1 and out["gradcam"].values.shape == (2, 5, 16, 16)
    assert (out.targets == -1).all() and out.targets.shape == (2, 5)
    classes = out.logits.topk(5, dim=1).indices
    by_class = ats.explain(model, x, "gradcam", targets=classes, layer="features")
    torch.testing.assert_close(out["gradcam"].values, by_class["gradcam"].values)


def test_multi_target_map_normalises_per_column_and_concatenates():
    model, x = small(widths=[4, 8], num_classes=6), torch.rand(3, 3, 16, 16)
    out = ats.explain(model, x, "gradcam", targets=torch.tensor([[0, 1]] * 3), batch_size=2)["gradcam"]
    norm = out.normalized()
    assert norm.shape == (3, 2, 16, 16)
    for k in range(2):
        torch.testing.assert_close(norm[:, k], out[:, k].normalized())
    assert out[1:].values.shape == (2, 2, 16, 16)
    with pytest.raises(IndexError, match="out of range"):
        out[:, 2]


# --- differentiable maps -------------------------------------------------------------------------------------------

class Tiny(nn.Module):
    """conv (weights given as a plain tensor, so gradcheck can vary them) → tanh → GAP → linear, float64."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.features = nn.Tanh()
        self.fc = nn.Linear(2, 2).double()
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -0.5], [0.3, 0.8]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(F.conv2d(x, self.weight, padding=1)).mean((2, 3)))


@pytest.mark.parametrize("method, opts", [("gradcam", {"relu": False}), ("saliency", {"reduce": "sum"}),
                                          ("hirescam", {"relu": False})])
def test_differentiable_maps_have_exact_gradients(method, opts):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    region = (torch.rand(2, 4, 4, generator=g) > 0.5).double()

    def loss(w: torch.Tensor) -> torch.Tensor:
        out = ats.explain(Tiny(w), x, method, targets=0, layer="features", differentiable=True,
                          options={method: opts})
        return (out[method].values * region).sum() + out.logits.sum()

    assert torch.autograd.gradcheck(loss, (weight,))  # against finite differences


def test_differentiable_call_trains_and_leaves_the_model_as_found():
    torch.manual_seed(0)
    model = small(widths=[4, 8])
    model.train()
    model.fc.weight.requires_grad_(False)
    x = torch.rand(4, 3, 16, 16)
    out = ats.explain(model, x, ("gradcam", "saliency"), targets=torch.tensor([0, 1, 2, 3]), differentiable=True)
    assert model.training and not model.fc.weight.requires_grad  # mode and flags as the user left them
    assert out["gradcam"].values.requires_grad and out.logits.requires_grad
    (out["gradcam"].values.mean() + out["saliency"].values.mean() + out.logits.sum()).backward()
    assert model.features[0][0].weight.grad is not None and model.fc.weight.grad is None
    with pytest.raises(NotApplicableError, match="scorecam run.s. the model again"):
        ats.explain(model, x, "scorecam", differentiable=True)


# --- forwards per command path -------------------------------------------------------------------------------------

def _counting(kind: type) -> tuple[list, object]:
    calls: list = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: calls.append(1) if isinstance(m, kind) else None)
    return calls, handle


def test_cli_explain_with_predicted_targets_runs_one_forward_per_batch(tmp_path):
    torch.manual_seed(0)
    ckpt = checkpoint.save(ats.models.get("smallcnn", widths=[4, 8]), tmp_path / "model.safetensors")
    calls, handle = _counting(SmallCNN)
    try:
        result = CliRunner().invoke(cli, ["explain", "--checkpoint", str(ckpt), "--images", "clutter", "--n", "6",
                                          "--methods", "gradcam,saliency,cam", "--batch-size", "4",
                                          "--out", str(tmp_path / "out"), "--quiet"], catch_exceptions=False)
    finally:
        handle.remove()
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 + 1  # two batches, each one shared pass; plus the one-image trace of layer="auto"


def test_tracker_snapshots_run_one_forward_each(tmp_path):
    from attnscope.train import fit
    from tiny_runs import tiny_config, tracked_run

    calls, handle = _counting(SmallCNN)
    try:
        fit(tiny_config(tmp_path / "untracked", epochs=1))
        untracked = len(calls)
        calls.clear()
        _, tracker = tracked_run(tmp_path / "tracked", every=None, methods=("gradcam", "saliency"), epochs=1)
    finally:
        handle.remove()
    snapshots = len(tracker.store.index["snapshots"])
    assert snapshots >= 2  # step 0 and the epoch's end
    assert len(calls) - untracked == snapshots + 1  # one shared pass per snapshot + the auto-layer trace


# --- defects fixed -------------------------------------------------------------------------------------------------

def test_occlusion_refuses_a_stride_that_leaves_pixels_uncovered():
    model, x = small(widths=[4, 8]), torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="stride 8 is larger than the window 4"):
        ats.explain(model, x, "occlusion", options={"occlusion": {"window": 4, "stride": 8}})
    ok = ats.explain(model, x, "occlusion", options={"occlusion": {"window": 8, "stride": 8}})["occlusion"]
    assert torch.isfinite(ok.values).all()


class Flattening(nn.Module):
    """forward does x.view(B, -1) on a spatial map: fails on channels-last tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.fc(f.view(f.shape[0], -1))


def test_reruns_work_by_default_on_a_model_that_flattens_with_view():
    model, x = Flattening(), torch.rand(2, 3, 8, 8)
    out = ats.explain(model, x, ("scorecam", "occlusion"), options={"occlusion": {"window": 4, "stride": 4}})
    assert torch.isfinite(out["scorecam"].values).all() and torch.isfinite(out["occlusion"].values).all()
    with pytest.raises(InputError, match="the model raised on inputs of shape"):  # forced NHWC: the model's error
        ats.explain(model, x, "scorecam", options={"scorecam": {"channels_last": True}})


def test_a_long_rerun_keeps_nchw_where_the_model_cannot_take_nhwc():
    """channels_last="auto" on a run the probe measures tries NHWC too; a forward that cannot take it keeps NCHW."""
    model, x = Flattening(), torch.rand(2, 3, 8, 8)
    opts = {"occlusion": {"window": 1, "stride": 1}}  # 64 windows × 2 images: the probe runs
    out = ats.explain(model, x, "occlusion", options=opts)["occlusion"].values
    nchw = ats.explain(model, x, "occlusion", options={"occlusion": {**opts["occlusion"], "channels_last": False}})
    torch.testing.assert_close(out, nchw["occlusion"].values)


def test_channels_last_auto_follows_the_model_and_the_images():
    images = torch.rand(2, 3, 8, 8)
    oracle = Oracle(small(), images, Target(torch.zeros(2, dtype=torch.long)), 1, None, None, None, None)
    assert oracle.channels_last("auto") and not oracle.channels_last(False)
    oracle = Oracle(Flattening(), images, Target(torch.zeros(2, dtype=torch.long)), 1, None, None, None, None)
    assert not oracle.channels_last("auto")
    nhwc = images.contiguous(memory_format=torch.channels_last)
    oracle = Oracle(Flattening(), nhwc, Target(torch.zeros(2, dtype=torch.long)), 1, None, None, None, None)
    assert oracle.channels_last("auto")


def test_clear_errors_for_layers_images_and_captions():
    model = small(widths=[4, 8])
    with pytest.raises(InputError, match="outputs \\(1, 10\\), not a spatial map"):
        ats.explain(model, torch.rand(1, 3, 16, 16), "gradcam", layer="fc")
    with pytest.raises(InputError, match="expects 3 channels, got 1"):
        ats.explain(model, torch.rand(1, 1, 16, 16), "gradcam")
    with pytest.raises(InputError, match="float64 and the model is torch.float32"):
        ats.explain(model, torch.rand(1, 3, 16, 16, dtype=torch.float64), "gradcam")
    half = ats.explain(model, torch.rand(1, 3, 16, 16).half(), "gradcam")  # lossless: cast
    assert half["gradcam"].values.dtype == torch.float32
    for bad in (0, -1, 1.5):
        with pytest.raises(InputError, match="batch_size must be a positive integer"):
            ats.explain(model, torch.rand(1, 3, 16, 16), "gradcam", batch_size=bad)
    with pytest.raises(InputError, match="out of range"):
        ats.explain(model, torch.rand(1, 3, 16, 16), "gradcam", targets=2**70)
    sat = ats.models.get("sat", vocab=ats.data.DigitScenes.vocabulary().to_json(), encoder_widths=[4, 8],
                         embed_dim=8, hidden_dim=16, attn_dim=8)
    with pytest.raises(InputError, match="captions must be \\(B, T>=2\\) ids"):
        sat(torch.rand(2, 3, 32, 32), torch.tensor([1, 2, 3]))


def test_public_entry_points_of_the_design_resolve():
    assert callable(ats.track.AttentionTracker) and callable(ats.report.build)
    assert ats.Explanation is not None and callable(ats.explain) and "gradcam" in ats.list_methods()


def test_full_resolution_values_are_upsampled_once_on_first_read(monkeypatch) -> None:
    """A CAM's map reaches the input's size only when `.values` is read, once; `.lowres` needs no upsampling;
    the lazily upsampled values equal the eager upsampling of the low-resolution map (also for K targets)."""
    from attnscope import maps as maps_module

    calls = []
    eager = maps_module.upsample
    monkeypatch.setattr(maps_module, "upsample", lambda *a, **k: (calls.append(1), eager(*a, **k))[1])
    import attnscope.explain.plan as plan

    monkeypatch.setattr(plan, "upsample", maps_module.upsample)
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[4, 8]).eval()
    x = torch.randn(2, 3, 32, 32)
    out = ats.explain(model, x, ["gradcam", "layercam"], targets=torch.tensor([[0, 1], [2, 3]]))
    assert calls == [] and out["gradcam"].lowres.shape[:2] == (2, 2) and out["gradcam"].shape == (2, 2, 32, 32)
    first = out["gradcam"].values
    assert len(calls) == 1 and out["gradcam"].values is first  # computed once, then kept
    torch.testing.assert_close(first, eager(out["gradcam"].lowres, (32, 32)))
    assert out["layercam"].values.shape == (2, 2, 32, 32) and len(calls) == 2
