"""Chunks from a memory budget (`explain.budget`): the same maps for every chunk, costs by hand, refusals
with the estimate, and Ablation-CAM's split at the layer (`explain.split`)."""

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.cli import main
from attnscope.errors import InputError, NotApplicableError, ResourceError
from attnscope.explain import budget
from attnscope.models import checkpoint
from test_explain_engine import Concat  # the head also reads a tensor from before `body`

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
RERUNS = {  # method → fast options; each sends its extra passes through Oracle.chunk
    "ig": {"steps": 5}, "smoothgrad": {"n": 5}, "scorecam": {}, "ablationcam": {},
    "occlusion": {"window": 8, "stride": 4}, "rise": {"n": 20, "draw": 8}, "sscam": {"n": 2},
    "iscam": {"n": 2}, "deeplift": {}, "gradientshap": {"n": 4, "n_references": 2},
}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return ats.models.get("smallcnn", widths=[4, 6]).eval()


@pytest.mark.parametrize("method", sorted(RERUNS))
def test_maps_are_the_same_for_every_chunk(model, method) -> None:
    """Chunk 1, chunk 3 and the budget's chunk give the same maps (to float rounding of batched kernels)."""
    maps = {}
    for chunk in (1, 3, None):
        opts = {method: {**RERUNS[method], "batch_size": chunk}}
        maps[chunk] = ats.explain(model, X, method, layer="features", options=opts)[method].values
    torch.testing.assert_close(maps[1], maps[3], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps[1], maps[None], rtol=1e-5, atol=1e-6)


def test_cost_is_the_bytes_one_forward_allocates() -> None:
    """Input 1·4·4·4 B = 64, conv output 2·4·4·4 = 128, in-place ReLU and the view 0, linear 3·4 = 12."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(32, 3))
    assert budget.input_cost(net, (1, 4, 4), torch.float32) == 64 + 128 + 12
    assert budget.input_cost(net, (1, 4, 4), torch.float32, after=net[0]) == 128 + 12  # from the conv's output on
    net2 = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())  # a ReLU that allocates: + 128
    assert budget.input_cost(net2, (1, 4, 4), torch.float32) == 64 + 128 + 128


def test_chunk_is_the_most_inputs_that_fit_the_budget() -> None:
    cpu, mib = torch.device("cpu"), 2**20
    assert budget.chunk_size(10 * mib, cpu, None, 1000, grad=False) == 51  # 512 MiB // 10 MiB
    assert budget.chunk_size(10 * mib, cpu, None, 1000, grad=True) == 25  # backward: 2× the bytes
    assert budget.chunk_size(10 * mib, cpu, None, 4, grad=False) == 4  # never more than there are
    assert budget.chunk_size(1000 * mib, cpu, None, 1000, grad=False) == 1  # at least one
    with budget.memory_budget(200 * mib):  # one budget given: for both kinds of chunk
        assert budget.chunk_size(10 * mib, cpu, None, 1000, grad=False) == 20
        assert budget.chunk_size(10 * mib, cpu, None, 1000, grad=True) == 10
    assert budget.chunk_size(10 * mib, cpu, 7, 1000, grad=False) == 7  # asked for: kept
    assert budget.parse_bytes("1.5G") == 3 * 2**29 and budget.parse_bytes("512MiB") == 512 * mib
    with pytest.raises(InputError, match="batch_size"):
        budget.chunk_size(mib, cpu, 0, 10, grad=False)


def test_budget_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ATTNSCOPE_MEMORY_BUDGET", "30M")
    assert budget.chunk_size(10 * 2**20, torch.device("cpu"), None, 100, grad=False) == 3


def test_a_setting_that_cannot_fit_is_refused_with_the_estimate(model, monkeypatch) -> None:
    cost = budget.input_cost(model, (3, 16, 16), torch.float32)
    monkeypatch.setattr(budget, "available", lambda device: 5 * cost)  # room for 5 forwards, 2 backwards
    with pytest.raises(ResourceError, match=r"batch_size=8 needs ≈ .* KiB .* available; batch_size=5 fits"):
        ats.explain(model, X, "scorecam", layer="features", options={"scorecam": {"batch_size": 8}})
    with pytest.raises(ResourceError, match=r"batch_size=3 needs .* forward \+ backward .*batch_size=2 fits"):
        ats.explain(model, X.repeat(2, 1, 1, 1)[:3], "gradcam", layer="features")  # the shared pass itself
    ats.explain(model, X, "scorecam", layer="features")  # the budget's own chunk fits
    monkeypatch.setattr(budget, "available", lambda device: cost // 2)  # not even one image
    with pytest.raises(ResourceError, match="use smaller images"):
        ats.explain(model, X[:1], "ig", layer="features")


def test_cli_refuses_a_size_that_cannot_fit_in_one_line(model, tmp_path, monkeypatch, capsys) -> None:
    path = checkpoint.save(model, tmp_path / "m.safetensors")
    monkeypatch.setattr(budget, "available", lambda device: 2**20)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["explain", "--checkpoint", str(path), "--images", "clutter", "--n", "1", "--size", "256",
              "--methods", "gradcam", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    assert err.startswith("error: batch_size=1 needs ≈ 11.3 MiB") and "1.0 MiB is available" in err
    assert not out.exists()


def test_ablation_split_equals_the_whole_model_per_ablation() -> None:
    """resnet18's layers after layer4 run alone on the ablated activations; the same map as tail='repeat'."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    opts = lambda tail: {"ablationcam": {"tail": tail}}
    split = ats.explain(net, x, "ablationcam", layer="layer4", options=opts("auto"))["ablationcam"]
    whole = ats.explain(net, x, "ablationcam", layer="layer4", options=opts("repeat"))["ablationcam"]
    assert split.meta["tail"] == "split" and whole.meta["tail"] == "repeat"
    torch.testing.assert_close(split.values, whole.values, rtol=1e-4, atol=1e-6)


def test_ablation_split_is_decided_before_running() -> None:
    model = Concat()
    with pytest.raises(NotApplicableError, match="also read 'stem_1' from before it"):
        ats.explain(model, X, "ablationcam", targets=1, layer="body", options={"ablationcam": {"tail": "split"}})
    # the cut is clean at stem, and the split's map is the per-chunk one
    split = ats.explain(model, X, "ablationcam", targets=1, layer="stem")["ablationcam"]
    shared = ats.explain(model, X, "ablationcam", targets=1, layer="stem",
                         options={"ablationcam": {"tail": "shared"}})["ablationcam"]
    assert split.meta["tail"] == "split"
    torch.testing.assert_close(split.values, shared.values, rtol=1e-5, atol=1e-6)


def test_robustness_scores_the_same_in_budget_chunks(model, monkeypatch) -> None:
    import importlib

    robustness = importlib.import_module("attnscope.evaluate.robustness")  # the package exports a function of that name

    cost = budget.input_cost(model, (3, 16, 16), torch.float32)
    whole = robustness.logits_of(model, X)
    with budget.memory_budget(cost):  # one image per forward
        torch.testing.assert_close(robustness.logits_of(model, X), whole, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(budget, "available", lambda device: cost // 2)
    with pytest.raises(ResourceError):
        robustness.logits_of(model, X)


def test_the_probe_picks_the_chunk_fastest_per_input_and_measures_once(monkeypatch) -> None:
    """Per-input time by hand: (4 + n) / n falls to the budget's 32, then 0.1·|n − 8| + 1 has its least at 8
    (the probe stops two sizes after it); each size timed twice, once per architecture, then cached."""
    net, cpu = nn.Linear(2, 2), torch.device("cpu")
    ran: list[int] = []
    tried = [2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    for cost, best in ((lambda n: 4 + n, 32), (lambda n: n * (0.1 * abs(n - 8) + 1), 8)):
        monkeypatch.setattr(budget, "_seconds", lambda run, n, device, cost=cost: (run(n), cost(n))[1])
        probe, ran[:] = budget.Probe(f"by-hand-{best}", ran.append), []
        with budget.memory_budget(32):  # one byte per input: chunks of at most 32
            assert budget.probed_chunk(net, 1, cpu, None, 1000, False, ("k",), probe) == best
            assert ran == tried  # each size twice (the first pass of a size builds its kernels), in turn
            assert budget.probed_chunk(net, 1, cpu, None, 1000, False, ("k",), probe) == best and ran == tried
            twin = nn.Linear(2, 2)  # another load of the same architecture: the same chunk, not measured again
            assert budget.probed_chunk(twin, 1, cpu, None, 1000, False, ("k",), probe) == best and ran == tried
    assert budget.sizes(32) == [2, 4, 8, 16, 32] and budget.sizes(20) == [2, 4, 8, 16, 20]
    with budget.fixed_chunks(), budget.memory_budget(32):  # no probe: the budget's chunk, bitwise reproducible
        assert budget.probed_chunk(nn.Linear(3, 3), 1, cpu, None, 1000, False, ("k",), probe) == 32
    assert budget.probed_chunk(net, 1, cpu, 5, 1000, False, ("k",), probe) == 5  # asked for: no probe
    assert budget.probed_chunk(net, 1, cpu, None, budget.PROBE_MIN - 1, False, ("k",), probe) == budget.PROBE_MIN - 1
    with budget.memory_budget(4):  # the budget bounds the probe: 4 bytes, 1 byte per input
        assert budget.probed_chunk(net, 1, cpu, None, 1000, False, ("k",), probe) == 4


def test_ablation_tail_is_traced_once_and_follows_the_model() -> None:
    """The fx tail is cached per model and layer: weights changed in place are read through it (same map as
    tail='repeat'); a replaced head is traced again; the cache dies with the model."""
    import gc
    import weakref

    import torchvision

    from attnscope.explain import split

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    opts = lambda tail: {"ablationcam": {"tail": tail}}

    def both(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        cut = ats.explain(net, x, "ablationcam", layer="layer4", options=opts("split"))["ablationcam"].values
        return cut, ats.explain(net, x, "ablationcam", layer="layer4", options=opts("repeat"))["ablationcam"].values

    both(net)
    first = split.tail_after(net, "layer4")[0]
    with torch.no_grad():
        net.fc.weight.mul_(-2.0)  # a training step: in place
    cut, whole = both(net)
    assert split.tail_after(net, "layer4")[0] is first
    torch.testing.assert_close(cut, whole, rtol=1e-4, atol=1e-6)
    net.fc = torch.nn.Linear(512, 4)  # a new head: traced again
    cut, whole = both(net)
    assert split.tail_after(net, "layer4")[0] is not first and first.fc is not net.fc
    torch.testing.assert_close(cut, whole, rtol=1e-4, atol=1e-6)
    alive = weakref.ref(net)
    del net, first
    gc.collect()
    assert alive() is None


def test_auto_layout_of_a_long_rerun_is_the_one_the_probe_measures_faster(monkeypatch) -> None:
    """channels_last="auto" on a model that declares no layout: a rerun of PROBE_MIN inputs or more takes the
    layout whose chunk the probe found faster (by a clock that says which), with that layout's maps."""
    from attnscope.explain import context

    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    opts = {"occlusion": {"window": 2, "stride": 2}}  # 64 windows × 2 images: probed
    layouts: list[bool] = []  # the layout of each rerun, in order
    real = context.Oracle.logits
    monkeypatch.setattr(context.Oracle, "logits", lambda self, t, cl="auto", fold=False: (
        layouts.append(bool(cl)), real(self, t, cl, fold))[1])
    for faster in (True, False):  # NHWC faster, then NCHW faster
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 3)).eval()
        monkeypatch.setattr(budget, "_seconds", lambda run, n, device, f=faster: (
            run(n), n * (1.0 if layouts[-1] == f else 2.0))[1])
        monkeypatch.setattr(budget, "_FASTEST", {})  # probes are cached per architecture: measure again
        auto = ats.explain(net, x, "occlusion", targets=0, options=opts)["occlusion"].values
        assert layouts[-1] is faster  # the passes ran in the faster layout
        forced = ats.explain(net, x, "occlusion", targets=0,
                             options={"occlusion": {**opts["occlusion"], "channels_last": faster}})["occlusion"]
        torch.testing.assert_close(auto, forced.values, rtol=1e-5, atol=1e-6)


def test_folded_copy_follows_the_weights_and_steps_aside_for_hooks() -> None:
    """split.folded: BatchNorm folded into the convolutions, the same logits to rounding; a weight or running
    statistic changed in place is folded again into the same copy (parameter versions); none while the model
    carries hooks or trains; Score-CAM with fold_batchnorm=True gives the default's maps to rounding."""
    from attnscope.explain import split

    torch.manual_seed(0)
    net = ats.models.get("smallcnn", widths=[4, 8]).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    copy = split.folded(net)
    assert copy is not None and split.folded(net) is copy
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    with torch.no_grad():
        torch.testing.assert_close(copy(x), net(x), rtol=1e-5, atol=1e-6)
        before = copy(x)
        next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)).weight.mul_(2.0)
        assert split.folded(net) is copy  # folded again into the same copy: its cached memory estimate stays
        torch.testing.assert_close(copy(x), net(x), rtol=1e-5, atol=1e-6)
        assert (copy(x) - before).abs().max() > 1e-3
    handle = net.register_forward_hook(lambda *_: None)
    assert split.folded(net) is None
    handle.remove()
    assert split.folded(net.train()) is None
    net.eval()
    opts = lambda fold: {"scorecam": {"fold_batchnorm": fold}}  # noqa: E731
    big = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # 8 images × 8 channels: folded
    plain = ats.explain(net, big, "scorecam", layer="features", options=opts(False))["scorecam"].values
    folded = ats.explain(net, big, "scorecam", layer="features", options=opts(True))["scorecam"].values
    torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-5)


def test_pair_max_is_max_pool_and_replaces_only_plain_two_by_two_pools() -> None:
    """PairMax equals nn.MaxPool2d(2) value for value (NaN and ±inf kept, odd sizes floored, NCHW and NHWC, NHWC
    out for NHWC in); `pairwise_pools` swaps only kernel-2 stride-2 pools without padding, dilation, ceil mode or
    indices, and the folded copy of SmallCNN carries them with the model's logits unchanged to rounding."""
    from attnscope.explain import split

    pool, pair = nn.MaxPool2d(2), split.PairMax()
    x = torch.randn(3, 5, 9, 7, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0], x[1, 2, 4, 4], x[2, 1, 3, 2] = float("nan"), float("inf"), float("-inf")
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        assert torch.equal(pair(t).nan_to_num(nan=7.0), pool(t).nan_to_num(nan=7.0))
        assert pair(t).isnan().sum() == 1  # the window holding the NaN
    nhwc = x[:, :, :8, :6].contiguous(memory_format=torch.channels_last)
    assert pair(nhwc).is_contiguous(memory_format=torch.channels_last)
    kept = [nn.MaxPool2d(3), nn.MaxPool2d(2, 1), nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
            nn.MaxPool2d(2, return_indices=True), nn.MaxPool2d(2, dilation=2), nn.AvgPool2d(2)]
    seq = nn.Sequential(nn.MaxPool2d((2, 2), 2), *kept, nn.Sequential(nn.MaxPool2d(2)))
    assert split.pairwise_pools(seq) == 2
    assert isinstance(seq[0], split.PairMax) and isinstance(seq[-1][0], split.PairMax)
    assert [type(m) for m in seq[1:-1]] == [type(m) for m in kept]
    torch.manual_seed(0)
    net = ats.models.get("smallcnn", widths=[4, 8, 8]).eval()
    copy = split.folded(net)
    assert sum(isinstance(m, split.PairMax) for m in copy.modules()) == 2
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 2  # the model keeps its own
    image = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(copy(image), net(image), rtol=1e-5, atol=1e-6)


def test_a_model_that_does_not_trace_is_folded_inside_its_sequentials() -> None:
    """LTPA does not trace with torch.fx: `split.folded` folds each Conv2d → BatchNorm2d pair of its Sequentials
    (the BatchNorm an Identity), makes in place only the ReLUs whose input a convolution just made, gives the
    logits to rounding and leaves the model as it was; the tracker's measures through it (the substitutions on the
    copy's own attention modules) equal those without. A weight changed in place is folded into the same copy
    without tracing the model again (a failed trace is remembered per structure)."""
    from torch.fx.experimental import optimization

    from attnscope.explain import split
    from attnscope.track import CausalMeasures

    torch.manual_seed(0)
    net = ats.models.get("ltpa", widths=[8, 16, 16, 16]).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    traces: list[int] = []
    real_fuse = optimization.fuse
    optimization.fuse = lambda *a, **k: (traces.append(1), real_fuse(*a, **k))[1]
    try:
        copy = split.folded(net)
        with torch.no_grad():
            net.stages[0][1].running_mean.add_(0.1)  # a training step's change: folded again, not traced again
            assert split.folded(net) is copy and traces == [1]
            x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
            torch.testing.assert_close(copy(x0), net(x0), rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            net.stages[0][1].running_mean.sub_(0.1)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        assert split.folded(net) is copy and traces == [1]
    finally:
        optimization.fuse = real_fuse
    assert copy is not None and not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4  # the model keeps its own
    relus = [m for m in copy.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(r.inplace for r in relus)  # each right after a folded pair
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(copy(x), net(x), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    first_relu = nn.Sequential(nn.Dropout(0.5), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU()).eval()
    folded_seq = split.fold_sequential(first_relu)
    assert not folded_seq[1].inplace and folded_seq[4].inplace  # Dropout passes its input on: not in place
    assert split.fold_sequential(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())) is None  # nothing to fold
    labels = torch.arange(5) % 10
    maps = {"m": torch.rand(5, 32, 32, generator=torch.Generator().manual_seed(2))}
    through_copy: list[int] = []
    copy.stages[0][0].register_forward_pre_hook(  # real batches, not the fake one of the memory estimate
        lambda _m, i: through_copy.append(i[0].shape[0]) if type(i[0]) is torch.Tensor else None)
    with budget.fixed_chunks():  # no chunk probe
        measures = [CausalMeasures(grid=4, sinks=False, fold_batchnorm=fold)(net, x, labels, maps, {})
                    for fold in (True, False)]
    assert through_copy == [5, 80]  # the unperturbed and blank-out passes ran the copy; the substituted passes
    # reused its backbone's outputs (track.replay)
    assert measures[0].keys() == measures[1].keys()
    for key, value in measures[1].items():
        assert value is None and measures[0][key] is None or abs(measures[0][key] - value) < 1e-5, key
