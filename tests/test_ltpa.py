"""Learn To Pay Attention: the model's equations, every variant, its intrinsic maps, training, Jaccard."""

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnscope import models
from attnscope.errors import InputError, NotApplicableError
from attnscope.explain import explain, list_methods
from attnscope.maps import upsample
from attnscope.metrics import jaccard
from attnscope.models.ltpa import Estimator, LTPAConfig, attend, compatibility

TINY = dict(widths=[4, 6, 8, 8, 8], global_dim=8)  # stages at 16, 8, 4, 2, 1 px for 16 px input
OPTIONS = ((2, 3), ("pc", "dp"), ("softmax", "sigmoid"), ("concat", "indep"), ("g-down", "l-up"))
VARIANTS = list(itertools.product(*OPTIONS))  # all 2 × 2 × 2 × 2 × 2


def tiny(**cfg) -> nn.Module:
    return models.get("ltpa", **{**TINY, **cfg})


# The equations, by hand on tiny tensors ----------------------------------------------------------------------------

# l: 2 channels at 1×2 positions, l_0 = (1, 3), l_1 = (2, 0); g = (1, 2).
L = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
G = torch.tensor([[1.0, 2.0]])  # (1, 2)


def test_dot_product_compatibility_by_hand():
    # c_i = <l_i, g>: (1·1 + 3·2, 2·1 + 0·2) = (7, 2)
    torch.testing.assert_close(compatibility(L, G, None), torch.tensor([[[7.0, 2.0]]]))


def test_scaled_dot_product_and_average_pooled_g_by_hand():
    # dp-scaled: <l_i, g> / √D with D = 2: (7, 2) / √2
    torch.testing.assert_close(compatibility(L, G, None, 2 ** -0.5), torch.tensor([[[7.0, 2.0]]]) / math.sqrt(2))
    est = Estimator(2, 2, LTPAConfig(compatibility="dp-scaled"))
    a, _ = est(L, G)
    torch.testing.assert_close(a, (torch.tensor([7.0, 2.0]) / math.sqrt(2)).softmax(0).view(1, 1, 2))
    model = tiny(global_pool="avg", compatibility="dp-scaled").eval()
    x = torch.rand(2, 3, 16, 16)
    last = []
    handle = model.stages[-1].register_forward_hook(lambda m, i, o: last.append(o))
    model(x)
    handle.remove()
    assert isinstance(model.global_pool, nn.AdaptiveAvgPool2d)
    g = model.global_fc(last[0].mean(dim=(2, 3)))  # the global feature from the average, not the maximum
    torch.testing.assert_close(model.global_fc(model.global_pool(last[0]).flatten(1)), g)


def test_parametrised_compatibility_by_hand():
    u = nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        u.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
    # c_i = <u, l_i + g>: l + g = (2, 5), (3, 2) → (2 − 5, 3 − 2) = (−3, 1)
    torch.testing.assert_close(compatibility(L, G, u), torch.tensor([[[-3.0, 1.0]]]))


def test_softmax_and_sigmoid_attention_by_hand():
    c = torch.tensor([[[7.0, 2.0]]])
    a, g_a = attend(L, c, "softmax")
    p0 = math.exp(7) / (math.exp(7) + math.exp(2))
    torch.testing.assert_close(a, torch.tensor([[[p0, 1 - p0]]]))
    torch.testing.assert_close(g_a, torch.tensor([[p0 * 1 + (1 - p0) * 2, p0 * 3 + (1 - p0) * 0]]))
    a, g_a = attend(L, torch.tensor([[[0.0, math.log(3.0)]]]), "sigmoid")  # σ = 1/2, 3/4: weights 2/5, 3/5
    torch.testing.assert_close(a, torch.tensor([[[0.5, 0.75]]]))
    torch.testing.assert_close(g_a, torch.tensor([[0.4 * 1 + 0.6 * 2, 0.4 * 3 + 0.6 * 0]]))


def test_sigmoid_weighted_average_stays_finite_when_every_gate_underflows():
    c = torch.full((1, 1, 2), -200.0)  # σ(−200) is 0 in float32: a / Σ a would be 0 / 0
    c[0, 0, 1] = -201.0
    a, g_a = attend(L, c, "sigmoid")
    assert (a == 0).all() and torch.isfinite(g_a).all()
    w = torch.tensor([1.0, math.exp(-1.0)]) / (1 + math.exp(-1.0))  # σ(c) ≈ e^c down there: softmax weights
    torch.testing.assert_close(g_a, (w[None, :] * L.flatten(2)).sum(2))


@pytest.mark.parametrize("projection", ["g-down", "l-up"])
def test_projection_by_hand(projection):
    # One local channel l = (1, 2) and g = (1, 2) of width 2: project g down or l up, then dot product.
    config = LTPAConfig(compatibility="dp", projection=projection)
    est = Estimator(local_dim=1, global_dim=2, config=config)
    local = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2)
    with torch.no_grad():
        if projection == "g-down":
            est.project_g.weight.copy_(torch.tensor([[1.0, 1.0]]))  # ĝ = 1 + 2 = 3 → c = (3, 6), g_a over l
            c, feats = torch.tensor([3.0, 6.0]), torch.tensor([[1.0], [2.0]])
        else:
            est.project_l.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))  # l̂_i = (l_i, 2 l_i) → c = (5, 10)
            c, feats = torch.tensor([5.0, 10.0]), torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    a, g_a = est(local, G)
    p = c.softmax(0)
    torch.testing.assert_close(a, p.view(1, 1, 2))
    torch.testing.assert_close(g_a, (p[:, None] * feats).sum(0, keepdim=True))
    assert g_a.shape[1] == (1 if projection == "g-down" else 2)


# Every variant: shapes, normalisation, gradient flow ----------------------------------------------------------------

@pytest.mark.parametrize("est,comp,norm,head,proj", VARIANTS)
def test_every_variant_runs_normalises_and_trains_every_estimator(est, comp, norm, head, proj):
    model = tiny(estimators=est, compatibility=comp, normalisation=norm, head=head, projection=proj, num_classes=5)
    x = torch.rand(3, 3, 16, 16)
    logits, maps = model(x, return_attention=True)
    assert logits.shape == (3, 5)
    grids = {"stages.1": 8, "stages.2": 4, "stages.3": 2}
    assert list(maps) == list(grids)[3 - est:]
    for name, a in maps.items():
        assert a.shape == (3, grids[name], grids[name])
        if norm == "softmax":
            torch.testing.assert_close(a.flatten(1).sum(1), torch.ones(3))
        else:
            assert (a > 0).all() and (a < 1).all()
    F.cross_entropy(logits, torch.tensor([0, 1, 4])).backward()
    grad = lambda p: float(p.grad.abs().max()) if p.grad is not None else 0.0  # noqa: E731
    # Under softmax, <u, g> is the same at every position and cancels: pc attention cannot depend on g,
    # so nothing reaches g (the global layer, the last stage, a g-down projection) but rounding error.
    g_free = comp == "pc" and norm == "softmax"
    for i, e in enumerate(model.estimators):
        for pname, p in e.named_parameters():
            expect_zero = g_free and pname.startswith("project_g")
            assert (grad(p) < 1e-6) if expect_zero else (grad(p) > 1e-5), f"estimators.{i}.{pname}: {grad(p)}"
    if comp == "pc":
        assert all(grad(e.u.weight) > 1e-5 for e in model.estimators)
    assert (grad(model.global_fc.weight) < 1e-6) if g_free else (grad(model.global_fc.weight) > 1e-5)
    assert grad(model.stages[0][0].weight) > 1e-5


def test_projections_appear_only_where_widths_differ():
    down = tiny(projection="g-down", global_dim=8)  # attended widths 6, 8, 8
    assert [e.project_g is not None for e in down.estimators] == [True, False, False]
    assert [e.dim for e in down.estimators] == [6, 8, 8]
    up = tiny(projection="l-up", global_dim=16)
    assert all(e.project_l is not None for e in up.estimators) and [e.dim for e in up.estimators] == [16] * 3


def test_indep_head_sums_log_probabilities_and_trains_like_the_authors_summed_scores():
    model = tiny(head="indep").eval()
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 3, 9, 2])
    feats = []
    hook = lambda m, i, o: feats.append(o[1])  # noqa: E731  (g_a of each estimator)
    handles = [e.register_forward_hook(hook) for e in model.estimators]
    logits = model(x)
    for h in handles:
        h.remove()
    scores = [fc(f) for fc, f in zip(model.classifiers, feats, strict=True)]
    torch.testing.assert_close(logits, sum(F.log_softmax(s, 1) for s in scores))
    # Cross-entropy over the summed log-probabilities equals it over the summed raw scores.
    torch.testing.assert_close(F.cross_entropy(logits, y), F.cross_entropy(sum(scores), y))


def test_pc_softmax_attention_ignores_g_but_pc_sigmoid_and_dp_do_not():
    local, g1, g2 = torch.rand(2, 8, 3, 3), torch.rand(2, 8), 5 * torch.rand(2, 8)
    for comp, norm, same in [("pc", "softmax", True), ("pc", "sigmoid", False), ("dp", "softmax", False),
                             ("dp-scaled", "softmax", False)]:
        est = Estimator(8, 8, LTPAConfig(compatibility=comp, normalisation=norm))
        a1, _ = est(local, g1)
        a2, _ = est(local, g2)
        assert torch.allclose(a1, a2, atol=1e-6) == same, (comp, norm)


def test_head_norm_puts_batchnorm_and_relu_before_the_classifier():
    model = tiny(head_norm=True).eval()  # fresh running statistics: BN(x) = x / sqrt(1 + eps)
    feats = []
    handles = [e.register_forward_hook(lambda m, i, o: feats.append(o[1])) for e in model.estimators]
    logits = model(torch.rand(2, 3, 16, 16))
    for h in handles:
        h.remove()
    eps = model.head_norms[0][0].eps
    expected = model.classifier(torch.cat([F.relu(f / math.sqrt(1 + eps)) for f in feats], dim=1))
    torch.testing.assert_close(logits, expected)


def test_bad_config_raises():
    with pytest.raises(InputError, match="compatibility"):
        tiny(compatibility="cosine")
    with pytest.raises(InputError, match="estimators"):
        tiny(estimators=5)
    with pytest.raises(InputError, match="projection"):
        tiny(projection="both")
    with pytest.raises(InputError, match="global_pool"):
        tiny(global_pool="sum")


# The intrinsic method ------------------------------------------------------------------------------------------------

def test_explain_ltpa_gives_one_map_per_estimator_and_their_mean():
    model = tiny(estimators=3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(5, 3, 16, 16)
    maps = explain(model, x, ("ltpa",))
    assert model.training and list_methods()["ltpa"] == "intrinsic"  # left as found: mode, buffers, no grads
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert list(maps) == ["ltpa", "ltpa/stages.1", "ltpa/stages.2", "ltpa/stages.3"]
    with torch.no_grad():
        logits, attention = model.eval()(x, return_attention=True)
        torch.testing.assert_close(model(x), logits)  # the attention flag changes nothing else
    for layer, a in attention.items():
        m = maps[f"ltpa/{layer}"]
        assert m.values.shape == (5, 16, 16) and m.layer == layer and m.meta["class_agnostic"]
        torch.testing.assert_close(m.lowres, a)
        torch.testing.assert_close(m.values.flatten(1).sum(1), torch.ones(5))  # spread over pixels, still sums to 1
        assert torch.equal(m.targets, logits.argmax(1))
    mean = torch.stack([maps[f"ltpa/{k}"].values for k in attention]).mean(0)
    torch.testing.assert_close(maps["ltpa"].values, mean)
    # Batched == one by one, and a requested class is recorded (the maps do not depend on it).
    one = explain(model, x[2:3], ("ltpa",), targets=7)
    torch.testing.assert_close(one["ltpa/stages.2"].values, maps["ltpa/stages.2"].values[2:3])
    assert one["ltpa"].targets.tolist() == [7]


def test_explain_ltpa_with_gradcam_runs_the_model_forward_once():
    model = tiny(estimators=2).eval()
    calls = []
    handle = model.register_forward_pre_hook(lambda _m, _args: calls.append(1))
    try:
        explain(model, torch.rand(2, 3, 16, 16), ("ltpa", "gradcam"))
    finally:
        handle.remove()
    assert len(calls) == 1  # the shared pass gives the logits, the layer, its gradients and the attention


def test_explain_ltpa_sigmoid_maps_are_gates_upsampled():
    model = tiny(normalisation="sigmoid", estimators=2).eval()
    maps = explain(model, torch.rand(2, 3, 16, 16), ("ltpa",))
    m = maps["ltpa/stages.3"]
    assert m.lowres.shape == (2, 2, 2) and (m.values > 0).all() and (m.values < 1).all()
    torch.testing.assert_close(m.values, upsample(m.lowres, (16, 16)), rtol=0, atol=0)  # gates, only resized


def test_explain_ltpa_on_a_plain_cnn_raises_naming_what_applies():
    with pytest.raises(NotApplicableError, match=r"'ltpa' does not apply.*SmallCNN.*Methods that do: .*gradcam"):
        explain(models.get("smallcnn", widths=[4, 8]), torch.rand(1, 3, 16, 16), ("ltpa",))


def test_gradcam_on_ltpa_reads_the_last_stage():
    maps = explain(tiny(), torch.rand(2, 3, 16, 16), ("gradcam",))
    assert maps["gradcam"].layer == "stages.4"


# Training with the paper's optimiser, and checkpoints -----------------------------------------------------------------

def test_train_ltpa_with_sgd_and_step_lr_then_reload(tmp_path):
    from attnscope.cli import main
    from attnscope.models import checkpoint

    out = tmp_path / "run"
    args = ["train", "--model", "ltpa", "--data", "clutter", "--out", str(out), "--epochs", "2", "--n", "32",
            "--n-test", "16", "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
            "--weight-decay", "5e-4", "--schedule", "step", "--step-size", "1", "--gamma", "0.1", "--quiet",
            "--data-opt", "size=32", "--data-opt", "digit_size=[10,16]", "--model-opt", "widths=[4,6,8,8,8]",
            "--model-opt", "global_dim=8", "--model-opt", "compatibility=dp", "--model-opt", "head=indep"]
    main(args)
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.005, 0.0005])  # one drop by gamma per epoch
    model, header = checkpoint.load(out)
    assert header["model"]["config"]["compatibility"] == "dp" and model.config.head == "indep"
    x = torch.rand(2, 3, 32, 32)
    rebuilt = models.get("ltpa", **header["model"]["config"]).eval()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), rebuilt(x))


# Jaccard ------------------------------------------------------------------------------------------------------------

def test_jaccard_by_hand():
    maps = torch.tensor([[[0.9, 0.6], [0.2, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[True, False], [True, False]], [[False, False], [False, False]]])
    # image 0 at 0.5: binarised {(0,0), (0,1)} vs mask {(0,0), (1,0)} → 1 / 3; image 1: both empty → 1
    torch.testing.assert_close(jaccard(maps, masks, 0.5), torch.tensor([1 / 3, 1.0]))
    torch.testing.assert_close(jaccard(maps, masks, 0.1), torch.tensor([2 / 3, 1.0]))
    torch.testing.assert_close(jaccard(maps, masks, 0.7), torch.tensor([1 / 2, 1.0]))
    with pytest.raises(ValueError, match="must both be"):
        jaccard(maps, masks[:, :1])
