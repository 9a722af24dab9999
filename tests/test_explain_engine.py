"""The hook engine and `explain()`: shared passes, targets, layers, errors, memory."""

import gc

import pytest
import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensor

import attnscope as ats
from attnscope.errors import InputError, NotApplicableError, UnknownNameError
from attnscope.explain import engine
from attnscope.maps import AttentionMap, normalize

GRADIENT_CAMS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")



class Counting(nn.Module):
    """A SmallCNN-like net counting its forward passes and the backward passes reaching its logits."""

    def __init__(self, widths: tuple[int, ...] = (6, 8)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        layers, c = [nn.ReLU(inplace=True)], widths[0]
        for w in widths[1:]:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 5)
        self.forwards = self.backwards = 0
        self.first_conv_tracked: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, (FakeTensor, fx.Proxy)):  # the memory estimate and the fx trace compute nothing
            return self.fc(self.features(self.stem(x)).mean(dim=(2, 3)))
        self.forwards += 1
        first = self.stem(x)
        self.first_conv_tracked.append(first.requires_grad)
        out = self.fc(self.features(first).mean(dim=(2, 3)))
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backwards += 1


X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_gradient_cams_share_one_forward_and_one_backward() -> None:
    model = Counting()
    ats.explain(model, X, GRADIENT_CAMS + ("cam", "eigencam"), layer="features")
    assert (model.forwards, model.backwards) == (1, 1)
    # the graph starts at the layer: nothing before it is tracked by autograd
    assert model.first_conv_tracked == [False]


def test_gradients_and_guided_gradients_share_one_forward() -> None:
    model = Counting()
    ats.explain(
        model,
        X,
        GRADIENT_CAMS + ("saliency", "inputxgrad", "guided-backprop", "guided-gradcam"),
        layer="features",
    )
    assert (model.forwards, model.backwards) == (1, 2)  # plain backward, then guided backward


def test_shared_pass_equals_separate_calls() -> None:
    model = Counting()
    names = GRADIENT_CAMS + ("saliency", "inputxgrad", "guided-backprop", "guided-gradcam", "eigencam")
    together = ats.explain(model, X, names, layer="features")
    for name in names:
        alone = ats.explain(model, X, name, layer="features")[name]
        torch.testing.assert_close(together[name].values, alone.values, rtol=1e-5, atol=1e-7)


def test_no_memory_growth_over_1000_calls() -> None:
    model, x = Counting((4, 4)), X[:, :, :8, :8]

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    def rss_kib() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4

    for _ in range(50):  # warm-up: allocator pools, lazy inits
        ats.explain(model, x, ("gradcam", "saliency", "guided-gradcam"), layer="features")
    tensors, rss = live_tensors(), rss_kib()
    for _ in range(1000):
        out = ats.explain(model, x, ("gradcam", "saliency", "guided-gradcam"), layer="features")
    del out
    assert live_tensors() <= tensors
    assert rss_kib() - rss < 8 * 1024  # KiB; one call's maps are < 1 KiB, 1,000 leaked graphs would be MBs


# --- targets ------------------------------------------------------------------------------------


def test_target_forms_agree() -> None:
    model = Counting()
    with torch.no_grad():
        pred = model(X).argmax(dim=1)
    by_none = ats.explain(model, X, "gradcam", targets=None)["gradcam"]
    by_tensor = ats.explain(model, X, "gradcam", targets=pred)["gradcam"]
    by_callable = ats.explain(model, X, "gradcam", targets=lambda z: z.gather(1, pred[:, None])[:, 0])[
        "gradcam"
    ]
    assert torch.equal(by_none.targets, pred) and torch.equal(by_callable.targets, torch.full((2,), -1))
    torch.testing.assert_close(by_none.values, by_tensor.values)
    torch.testing.assert_close(by_none.values, by_callable.values)
    by_int = ats.explain(model, X, "gradcam", targets=2)["gradcam"]
    assert by_int.targets.tolist() == [2, 2]


@pytest.mark.parametrize(
    "targets, message",
    [
        (torch.tensor([1, 2, 3]), "batch has 2 images"),
        (torch.tensor([1]), "batch has 2 images"),
        (torch.tensor([0, 5]), "out of range"),
        (-1, "out of range"),
        (torch.tensor([0.0, 1.0]), "integer classes"),
        (lambda z: z[:, :2, None], "shape (2,) or (2, K)"),
        (lambda z: z.argmax(1), "floating point scores"),
        ("cat", "carries no class names"),
    ],
)
def test_bad_targets_raise(targets, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ats.explain(Counting(), X, "gradcam", targets=targets)


def test_callable_target_is_applied_row_by_row_for_methods_that_repeat_images() -> None:
    model = Counting()
    by_class = ats.explain(model, X, "ig", targets=torch.tensor([1, 3]), options={"ig": {"steps": 4}})["ig"]
    # a row-wise callable works on the (B·steps) path batch; it gives the difference of two logits
    diff = ats.explain(model, X, "ig", targets=lambda z: z[:, 1] - z[:, 3], options={"ig": {"steps": 4}})[
        "ig"
    ]
    other = ats.explain(model, X, "ig", targets=3, options={"ig": {"steps": 4}})["ig"]
    torch.testing.assert_close(diff.values[0], by_class.values[0] - other.values[0], rtol=1e-4, atol=1e-7)


# --- layers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("smallcnn", "features"),
        ("resnet18", "layer4"),
        ("vgg11_bn", "features"),
        ("densenet121", "features"),
        ("mobilenet_v2", "features"),
        ("efficientnet_b0", "features"),
        ("convnext_tiny", "features"),
    ],
)
def test_auto_layer_is_the_last_conv_block(name: str, expected: str) -> None:
    model = ats.models.get(name, num_classes=4)
    out = ats.explain(model, torch.randn(1, 3, 64, 64), "gradcam")["gradcam"]
    assert out.layer == expected


def test_layer_by_name_and_by_module_agree() -> None:
    model = Counting()
    by_name = ats.explain(model, X, "gradcam", layer="features.1")["gradcam"]
    by_module = ats.explain(model, X, "gradcam", layer=model.features[1])["gradcam"]
    assert by_name.layer == by_module.layer == "features.1"
    assert not torch.equal(by_name.values, ats.explain(model, X, "gradcam", layer="stem")["gradcam"].values)
    torch.testing.assert_close(by_name.values, by_module.values)


def test_unknown_layer_lists_close_names() -> None:
    with pytest.raises(UnknownNameError, match="features.1"):
        ats.explain(Counting(), X, "gradcam", layer="feature.1")
    with pytest.raises(InputError, match="not a submodule"):
        ats.explain(Counting(), X, "gradcam", layer=nn.ReLU())


def test_a_layer_that_runs_twice_is_refused() -> None:
    model = ats.models.get("resnet18", num_classes=4)
    with pytest.raises(InputError, match="ran 2 times"):
        ats.explain(model, torch.randn(1, 3, 32, 32), "gradcam", layer="layer1.0.relu")


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.randn(3, 12, 12), r"images\[None\]"),
        (torch.zeros(2, 3, 12, 12, dtype=torch.long), "floating"),
        (torch.full((1, 3, 12, 12), float("nan")), "NaN"),
        (torch.randn(0, 3, 12, 12), "empty"),
        (torch.randn(2, 3, 12, 12).index_put_((torch.tensor(1), torch.tensor(2), torch.tensor(5), torch.tensor(7)),
                                              torch.tensor(float("nan"))), "NaN"),  # one NaN among finite values
        (torch.randn(2, 3, 12, 12).index_put_((torch.tensor(0), torch.tensor(0), torch.tensor(0), torch.tensor(0)),
                                              torch.tensor(float("-inf"))), "infinite"),
    ],
)
def test_bad_images_raise(images, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ats.explain(Counting(), images, "gradcam")


def test_all_finite_in_one_pass_agrees_with_isfinite() -> None:
    """`modules.all_finite` (min and max of one pass) says what isfinite().all() says, for each float dtype, a
    single NaN or ±inf anywhere, integer, complex and empty tensors."""
    from attnscope.modules import all_finite

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for bad in (None, float("nan"), float("inf"), float("-inf")):
            t = torch.randn(3, 4, 5, generator=g).to(dtype)
            if bad is not None:
                t.view(-1)[int(torch.randint(60, (1,), generator=g))] = bad
            assert all_finite(t) is bool(torch.isfinite(t).all()), (dtype, bad)
    assert all_finite(torch.tensor([1, 2])) and all_finite(torch.empty(0))
    assert not all_finite(torch.tensor([1 + 1j, complex(0, float("nan"))])) and all_finite(torch.tensor([1 + 1j]))


def test_unknown_method_and_options_raise() -> None:
    with pytest.raises(UnknownNameError, match="gradcam"):
        ats.explain(Counting(), X, "gradcm")
    with pytest.raises(InputError, match="no option"):
        ats.explain(Counting(), X, "ig", options={"ig": {"stepz": 3}})
    with pytest.raises(InputError, match="positive integer"):
        ats.explain(Counting(), X, "ig", options={"ig": {"steps": 0}})
    with pytest.raises(InputError, match="integration rule"):
        ats.explain(Counting(), X, "ig", options={"ig": {"rule": "simpson"}})
    with pytest.raises(InputError, match="baseline"):
        ats.explain(Counting(), X, "ig", options={"ig": {"baseline": torch.zeros(5, 3, 12, 12)}})
    with pytest.raises(InputError, match="window"):
        ats.explain(Counting(), X, "occlusion", options={"occlusion": {"window": 20}})
    with pytest.raises(InputError, match="weights"):
        ats.explain(Counting(), X, "scorecam", options={"scorecam": {"weights": "softmax"}})
    with pytest.raises(InputError, match="reduction"):
        ats.explain(Counting(), X, "saliency", options={"saliency": {"reduce": "max"}})


def test_methods_that_do_not_apply_say_which_do() -> None:
    no_relu = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    with pytest.raises(NotApplicableError, match="Methods that do: .*gradcam"):
        ats.explain(no_relu, X, "guided-backprop")
    with pytest.raises(NotApplicableError, match="callable target"):
        ats.explain(Counting(), X, "cam", targets=lambda z: z[:, 0])


# --- engine details -----------------------------------------------------------------------------


def test_model_that_edits_its_input_in_place_edits_a_copy() -> None:
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = X.clone()
    ats.explain(model, x, ("saliency", "gradcam", "scorecam"), layer="1")
    assert torch.equal(x, X)


def test_ablation_runs_the_layers_before_once_per_chunk() -> None:
    model = Counting((6, 8))
    ats.explain(model, X[:1], "ablationcam", layer="features", options={"ablationcam": {"batch_size": 4}})
    live = 8  # at most 8 channels: ceil(live / 4) chunks, plus the shared pass
    assert model.forwards <= 1 + -(-live // 4)


class Concat(nn.Module):
    """The head concatenates an earlier feature map: the ablated batch cannot reuse the one-image prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.fc(torch.cat([s, self.body(s)], dim=1).mean(dim=(2, 3)))


def test_ablation_of_a_layer_whose_tail_reads_earlier_tensors() -> None:
    model = Concat()
    with pytest.raises(InputError, match="tail='repeat'"):  # never a silent retry
        ats.explain(model, X, "ablationcam", targets=1, layer="body")
    got = ats.explain(model, X, "ablationcam", targets=1, layer="body",
                      options={"ablationcam": {"tail": "repeat"}})["ablationcam"].values
    # the definition, by hand: zero channel k of `body`'s output with a hook, full forward each time
    with torch.no_grad():
        acts = model.body(model.stem(X))
        y = model(X)[:, 1]
        weights = torch.zeros(2, 4)
        for k in range(4):
            h = model.body.register_forward_hook(lambda m, i, o, k=k: o.index_fill(1, torch.tensor([k]), 0.0))
            weights[:, k] = (y - model(X)[:, 1]) / y
            h.remove()
    torch.testing.assert_close(got, (weights[:, :, None, None] * acts).sum(1).clamp_min(0))


def test_scorecam_runs_one_pass_per_distinct_mask() -> None:
    model = Counting((6, 8))
    with torch.no_grad():
        model.features[1].weight[:4] = 0  # channels 0-3 of the layer: constant (zero) maps
        model.features[1].bias[:4] = 0
        model.features[1].weight[5] = model.features[1].weight[4]  # channel 5 duplicates channel 4
        model.features[1].bias[5] = model.features[1].bias[4]
    model.forwards = 0
    fast = ats.explain(model, X[:1], "scorecam", layer="features", options={"scorecam": {"batch_size": 1}})
    # shared pass + 1 zero-image pass + distinct masks (channels 4 = 5, 6, 7) = 1 + 1 + 3
    assert model.forwards == 5
    # the same map as running every channel: Σ_k w_k A_k with w_k = softmax(f(x ⊙ H_k))_c
    with torch.no_grad():
        acts = model.features(model.stem(X[:1]))
        c = int(model(X[:1]).argmax())
        masks = normalize(acts[0])  # (C, h, w), input size = layer size here
        w = torch.stack([model(X[:1] * m).softmax(1)[0, c] for m in masks])
    torch.testing.assert_close(fast["scorecam"].values[0], (w[:, None, None] * acts[0]).sum(0).clamp_min(0))


def test_smoothgrad_seed_and_noise() -> None:
    model = Counting()
    a = ats.explain(model, X, "smoothgrad", options={"smoothgrad": {"n": 4, "seed": 1}})["smoothgrad"].values
    b = ats.explain(model, X, "smoothgrad", options={"smoothgrad": {"n": 4, "seed": 2}})["smoothgrad"].values
    plain = ats.explain(model, X, "saliency")["saliency"].values
    flat = ats.explain(model, X, "smoothgrad", options={"smoothgrad": {"n": 3, "sigma": 0.0}})[
        "smoothgrad"
    ].values
    assert not torch.equal(a, b)
    torch.testing.assert_close(flat, plain)  # no noise: the mean of equal gradients is the gradient


def test_integrated_gradients_completeness_at_64_steps() -> None:
    """Σ IG = f(x) − f(x') within 1 % on a model with biases (the path crosses ReLU kinks)."""
    torch.manual_seed(0)
    model = ats.models.get("smallcnn").eval()  # the default SmallCNN, on 64 px images as in ClutteredDigits
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    baseline = 0.5
    ig = ats.explain(model, x, "ig", options={"ig": {"steps": 64, "baseline": baseline}})["ig"]
    with torch.no_grad():
        t = ig.targets[:, None]
        gap = model(x).gather(1, t)[:, 0] - model(torch.full_like(x, baseline)).gather(1, t)[:, 0]
    assert ((ig.values.sum(dim=(1, 2)) - gap).abs() <= 0.01 * gap.abs()).all()
    # and the rule matters: a 4-step left Riemann sum misses by more than 1 %
    rough = ats.explain(
        model, x, "ig", options={"ig": {"steps": 4, "baseline": baseline, "rule": "riemann-left"}}
    )
    assert ((rough["ig"].values.sum(dim=(1, 2)) - gap).abs() > 0.01 * gap.abs()).any()


# --- maps ---------------------------------------------------------------------------------------


def test_normalized_is_per_image_and_never_nan() -> None:
    values = torch.stack([torch.full((3, 3), 5.0), torch.arange(9.0).view(3, 3) - 4])
    m = AttentionMap(values=values, method="x", targets=torch.tensor([0, 1]))
    n = m.normalized()
    assert torch.equal(n[0], torch.zeros(3, 3))
    assert float(n[1].min()) == 0.0 and float(n[1].max()) == 1.0 and n[1, 1, 1] == 0.5
    assert torch.isfinite(n).all() and torch.equal(m.values, values)  # raw values untouched


def test_capture_is_detached() -> None:
    model = Counting()
    with engine.model_guard(model):
        cap, _ = engine.capture(model, X, None, frozenset({"layer", "layer_grad", "input_grad"}), layer=model.features)
    for t in (cap.logits, cap.scores, cap.activations, cap.gradients, cap.input_grad):
        assert not t.requires_grad and t.grad_fn is None


@pytest.mark.parametrize("name", ["scorecam", "occlusion"])
def test_channels_last_passes_give_the_same_maps(name: str) -> None:
    model = Counting()
    opts = {"window": 4, "stride": 4} if name == "occlusion" else {}
    plain = ats.explain(model, X, name, options={name: {**opts, "channels_last": False}})[name].values
    nhwc = ats.explain(model, X, name, options={name: opts})[name].values  # the default: channels-last
    # occlusion subtracts nearly equal scores: compare at the scale of the scores (~1e-2), not of the map
    torch.testing.assert_close(nhwc, plain, rtol=1e-4, atol=1e-7)


def test_auto_layer_trace_leaves_batch_norm_statistics_alone_even_in_train_mode() -> None:
    from attnscope import models
    from attnscope.explain.layers import resolve_layer

    model = models.get("smallcnn", widths=[4, 8]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert resolve_layer(model, "auto", torch.rand(2, 3, 16, 16))[0] == "features"
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
