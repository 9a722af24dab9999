"""Faithfulness against causal references (metrics/causal.py) and the tracker's measures built on them
(track/causal.py): hand-computed values on linear models, batched == unbatched, and agreement with the
explain path on TinyViT."""

from __future__ import annotations

import pytest
import torch

import attnscope as ats
from attnscope.errors import InputError
from attnscope.metrics import causal
from attnscope.track import AttentionTracker, CausalMeasures, TrackStore, parts_from, probe_from
from attnscope.track.causal import evaluating, logit_scorer, sink_measures, substituted_attention

G = torch.Generator().manual_seed(0)
X = torch.rand(3, 2, 8, 8, generator=G)
W = torch.randn(2, 8, 8, generator=G)


def counting(rows: list[int]):
    """A forward pre-hook that appends each real batch's size to `rows` (not the fake tensor of a memory
    estimate: `explain.budget.input_cost` runs the model on one)."""
    def hook(_module, inputs) -> None:
        if type(inputs[0]) is torch.Tensor:
            rows.append(inputs[0].shape[0])
    return hook


def linear(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """A model whose score is Σ w · x: blanking a cell drops it by exactly that cell's Σ w · x."""
    return (x * W).flatten(1).sum(1)


def test_blank_out_of_a_linear_score_is_each_cells_contribution() -> None:
    ref = causal.blank_out(linear, X, grid=4)
    contrib = (X * W).sum(1)  # (B, 8, 8)
    assert torch.allclose(ref, causal.cell_sums(contrib, 4), atol=1e-5)
    assert torch.allclose(causal.blank_out(linear, X, grid=4, batch_size=5), ref)  # chunking changes nothing
    rho = causal.causal_agreement(contrib, ref, 4)
    assert rho.shape == (3,) and torch.allclose(rho, torch.ones(3, dtype=torch.float64))  # one ρ per image
    assert torch.allclose(causal.causal_agreement(-contrib, ref, 4), -torch.ones(3, dtype=torch.float64))
    mean_fill = X.mean((2, 3), keepdim=True)
    ref_mean = causal.blank_out(linear, X, grid=2, substrate=mean_fill)
    assert torch.allclose(ref_mean, causal.cell_sums(((X - mean_fill) * W).sum(1), 2), atol=1e-5)


def test_cell_sums_by_hand_and_bad_grids() -> None:
    m = torch.arange(16.0).reshape(1, 4, 4)
    assert causal.cell_sums(m, 2).tolist() == [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    with pytest.raises(InputError, match="divides"):
        causal.cell_sums(m, 3)
    with pytest.raises(InputError, match="reference"):
        causal.causal_agreement(m, torch.zeros(1, 3), 2)


def test_part_drops_and_agreement_by_hand() -> None:
    removed = torch.stack([X.clone() for _ in range(3)], 1)  # (B, 3, C, H, W)
    regions = torch.zeros(3, 3, 8, 8, dtype=torch.bool)
    for k, rows in enumerate((slice(0, 2), slice(2, 5), slice(5, 8))):
        removed[:, k, :, rows] = 0
        regions[:, k, rows] = True
    present = torch.ones(3, 3, dtype=torch.bool)
    present[2, 2] = False
    drops = causal.part_drops(linear, X, removed, present, batch_size=2)
    expected = torch.stack([((X * W)[:, :, r]).flatten(1).sum(1) for r in (slice(0, 2), slice(2, 5), slice(5, 8))], 1)
    assert torch.allclose(drops[present], expected.double()[present], atol=1e-5) and drops[2, 2].isnan()
    maps = torch.zeros(3, 8, 8)
    order = drops.nan_to_num(-1e9).argsort(1)  # put mass 1, 2, 3 on the parts by increasing drop: ρ = 1
    for i in range(3):
        for rank, k in enumerate(order[i].tolist()):
            maps[i][regions[i, k]] = (rank + 1) / regions[i, k].sum()
    rho, top = causal.part_agreement(maps, regions, drops, present)
    assert rho[:2].tolist() == pytest.approx([1.0, 1.0]) and rho[2].isnan()  # two parts: no ρ
    assert top.tolist() == [1.0, 1.0, 1.0]
    rho, top = causal.part_agreement(torch.zeros_like(maps), regions, drops, present)  # no mass: no top part
    assert top.isnan().all() and rho[:2].isnan().all()


def test_part_agreement_batched_equals_each_image_alone() -> None:
    """Images grouped by the parts they have give what each image gives alone (scipy's Spearman over its present
    parts; the first part of most mass against the first of most drop): absent parts, tied drops, flat maps."""
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        n, k = 12, 2 + trial % 3
        maps = torch.rand(n, 8, 8, generator=g)
        maps[:2] = 0.25  # flat
        regions = torch.rand(n, k, 8, 8, generator=g) > 0.7
        drops = torch.randn(n, k, generator=g).double()
        drops[3, 1] = drops[3, 0]  # a tie
        present = torch.rand(n, k, generator=g) > 0.25
        drops[~present] = float("nan")
        rho, top = causal.part_agreement(maps, regions, drops, present)
        mass = causal.part_mass(maps, regions)
        for i in range(n):
            keep = present[i].nonzero()[:, 0].tolist()
            m, d = mass[i, keep].numpy(), drops[i, keep].numpy()
            want = spearmanr(m, d).statistic if len(keep) >= 3 and m.std() > 0 and d.std() > 0 else float("nan")
            assert rho[i].item() == pytest.approx(want, abs=1e-9, nan_ok=True), (trial, i)
            first = len(keep) >= 2 and m.max() > m.min()
            assert top[i].item() == pytest.approx(float(m.argmax() == d.argmax()) if first else float("nan"),
                                                  nan_ok=True), (trial, i)


def test_sink_and_norm_functions_by_hand() -> None:
    rows = torch.tensor([[0.5, 0.1, 0.1, 0.2, 0.1]])  # CLS, 1 register, 3 patches
    assert causal.prefix_share(rows, 2).item() == pytest.approx(0.6)
    assert causal.background_share(rows, 2, torch.tensor([[True, False, True]])).item() == pytest.approx(0.2)
    assert causal.norm_outliers(torch.tensor([[1.0, 1.0, 1.1, 5.0]])).item() == 0.25
    assert causal.substitution_gap(torch.tensor([2.0]), torch.tensor([0.5])).item() == 1.5


def test_sinks_of_tinyvit_equal_its_attention_maps() -> None:
    """The last layer's CLS row from the sink hook equals what explain's `attention` method reads."""
    torch.manual_seed(0)
    vit = ats.models.get("vit", image_size=32, patch_size=8, dim=32, depth=2, heads=2, registers=2)
    x = torch.rand(2, 3, 32, 32)
    boxes = torch.tensor([[0, 0, 8, 8], [8, 8, 24, 24]])
    with evaluating(vit):
        s = sink_measures(vit, x, boxes)
    lowres = ats.explain(vit, x, "attention")["attention"].lowres  # (B, 4, 4) CLS row over patches
    assert s["sinks/prefix_share"] == pytest.approx(float((1 - lowres.flatten(1).sum(1)).mean()), abs=1e-5)
    off = torch.ones(2, 4, 4, dtype=torch.bool)
    off[0, 0, 0] = False
    off[1, 1:3, 1:3] = False
    assert s["sinks/background_share"] == pytest.approx(float((lowres * off).flatten(1).sum(1).mean()), abs=1e-5)
    assert vit.training  # left as found


def test_uniform_substitution_is_average_pooling() -> None:
    """An attention-pooling CNN with uniform weights is SmallCNN's GAP head; a gap of 0 when a is uniform already."""
    torch.manual_seed(0)
    att = ats.models.get("pooling-cnn", widths=[8, 16], pool="attention").eval()
    gap = ats.models.get("smallcnn", widths=[8, 16]).eval()
    gap.load_state_dict({k: v for k, v in att.state_dict().items() if not k.startswith("estimators")})
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        att.estimators[0].u.weight.mul_(100)  # a far from uniform
    with substituted_attention(att, "uniform"):
        assert torch.allclose(att(x), gap(x), atol=1e-5)
    assert (att(x) - gap(x)).abs().max() > 1e-3  # the hooks are gone
    with torch.no_grad():
        att.estimators[0].u.weight.zero_()
    labels = torch.zeros(4, dtype=torch.long)
    out = CausalMeasures(grid=2, sinks=False)(att, x, labels, {}, {})
    assert out["own/gap@uniform"] == pytest.approx(0, abs=1e-6)
    assert out["own/gap@permuted"] == pytest.approx(0, abs=1e-6)


def test_permuted_substitution_is_the_same_whatever_the_chunks() -> None:
    """One permutation per image and module, not per draw: the permuted gap of 6 images run 6, 4 + 2 or 1 at a time
    is the same (before, the chunks decided which image got which permutation)."""
    torch.manual_seed(0)
    model = ats.models.get("ltpa", widths=[8, 16, 16, 16], estimators=2).eval()
    with torch.no_grad():
        for e in model.estimators:
            e.u.weight.mul_(50.0)
    x, labels = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(6) % 10
    gaps = {size: CausalMeasures(grid=2, sinks=False, batch_size=size, substitution=("permuted",))(
        model, x, labels, {}, {})["own/gap@permuted"] for size in (6, 4, 1)}
    assert abs(gaps[6]) > 1e-3 and gaps[4] == pytest.approx(gaps[6], abs=2e-6) and gaps[1] == pytest.approx(gaps[6],
                                                                                                        abs=2e-6)


def test_permuted_substitution_on_ltpa_uses_the_permuted_weights() -> None:
    torch.manual_seed(0)
    model = ats.models.get("ltpa", widths=[8, 16, 16], estimators=1).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        _, maps = model(x, return_attention=True)
        with substituted_attention(model, "permuted", seed=3):
            permuted = model(x)
        a = maps["stages.1"]  # (2, 8, 8)
        local = model.stages[1](model.stages[0](x))
        order = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed((3 * 1_000_003 + 0) * 1_000_003
                                                                                       + i)) for i in range(2)])
        w = a.flatten(1).gather(1, order).view_as(a)
        by_hand = model.classifier(torch.einsum("bhw,bdhw->bd", w, local))
    assert torch.allclose(permuted, by_hand, atol=1e-5)


@pytest.mark.parametrize("name", ["ltpa", "smallcnn"])
def test_the_nhwc_passes_of_models_that_prefer_them_give_the_nchw_measures(name) -> None:
    """LTPA and SmallCNN declare `prefers_channels_last`: the tracker's blank-out, part-removal and substitution
    passes run NHWC (the weights' NHWC views) and give the logits of the NCHW passes to float rounding."""
    data = ats.data.get("clutter-decoy", "train", 4, seed=0, size=32, digit_size=(8, 12))
    probe = probe_from(data, 4)
    torch.manual_seed(0)
    model = ats.models.get(name, widths=[8, 16, 16, 16]).eval()
    assert model.prefers_channels_last
    seen = []

    def layout(_module, inputs) -> None:  # of real batches, not the fake one of the memory estimate
        if type(inputs[0]) is torch.Tensor:
            seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    handle = model.get_submodule(("stages.0" if name == "ltpa" else "features.0") + ".0").register_forward_pre_hook(
        layout)
    with evaluating(model):
        auto = causal.blank_out(logit_scorer(model, probe.labels), probe.images, 4)
        nchw = causal.blank_out(logit_scorer(model, probe.labels, channels_last=False), probe.images, 4)
    handle.remove()
    assert seen[0] and not seen[-1]  # "auto" ran NHWC, False NCHW
    assert (auto - nchw).abs().max() <= 1e-3 * nchw.abs().max() and nchw.abs().max() > 1e-4
    measures = CausalMeasures(grid=4, parts=parts_from(data, 4), sinks=False)
    with evaluating(model):
        out = measures(model, probe.images, probe.labels, {}, {})
    with evaluating(model):  # the part drops by hand, NCHW
        f = logit_scorer(model, probe.labels, channels_last=False)
        base = f(probe.images, torch.arange(4))
        drop = base - f(measures.parts.removed[:, 1], torch.arange(4))  # "fragments", present in each image
    # the measures keep 6 decimals
    assert out["parts/drop@fragments"] == pytest.approx(float(drop.double().mean()), rel=1e-3, abs=1e-6)


def test_tracker_records_the_causal_measures_and_resumes(tmp_path) -> None:
    data = ats.data.get("clutter-decoy", "train", 6, seed=0, size=32, digit_size=(8, 12))
    probe = probe_from(data, 6)
    torch.manual_seed(0)
    model = ats.models.get("vit", image_size=32, patch_size=8, dim=32, depth=2, heads=2)
    measures = CausalMeasures(grid=4, parts=parts_from(data, 6))
    with AttentionTracker(tmp_path, probe, ("attention", "saliency"), causal=measures) as tracker:
        out = tracker.epoch_end(model, 0, 0)
    assert sum(out[f"parts/top@{k}"] for k in ("digit", "fragments", "decoy")) == pytest.approx(1.0)
    for key in ("attention/blankout_rho", "saliency/parts_top", "blankout/energy_box@decoy", "parts/drop@decoy",
                "sinks/prefix_share", "sinks/background_share"):
        assert key in out
    with evaluating(model):
        f = logit_scorer(model, probe.labels)
        ref = causal.blank_out(f, probe.images, 4)
    maps = TrackStore.open(tmp_path / "track").maps(0)
    rho = causal.causal_agreement(maps["saliency"].float(), ref, 4)
    assert out["saliency/blankout_rho"] == pytest.approx(float(rho.nanmean()), abs=1e-6)
    AttentionTracker(tmp_path, probe, ("attention", "saliency"), causal=measures, resume=True).epoch_end(model, 0, 0)
    with pytest.raises(InputError, match="other settings"):
        AttentionTracker(tmp_path, probe, ("attention", "saliency"), causal=CausalMeasures(grid=2),
                         resume=True).epoch_end(model, 0, 0)


@pytest.mark.slow
def test_the_own_loop_example_records_faithfulness(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = ["--n", "64", "--epochs", "1", "--batch-size", "32", "--size", "32", "--widths", "4,8", "--probe", "8",
            "--n-test", "16", "--faithfulness", "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(root / "examples" / "own_loop.py"), *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "faithfulness: gradcam/blankout_rho" in done.stdout
    measures = TrackStore.open(tmp_path / "run" / "track").snapshots[-1]["measures"]
    assert {"gradcam/blankout_rho", "parts/drop@decoy", "gradcam/parts_top"} <= set(measures)


def test_blankout_rho_is_a_declared_metric_the_tracker_and_bench_read(tmp_path) -> None:
    """`measures=(..., "blankout_rho")` gives the tracker the same ρ as `CausalMeasures` on the same grid."""
    from attnscope.metrics import METRICS
    from attnscope.track.measures import DEFAULT

    assert METRICS.get("blankout_rho").model and METRICS.get("blankout_rho").group == "faithfulness"
    data = ats.data.get("clutter", "test", 4, seed=0, size=32, digit_size=(8, 12))
    probe = probe_from(data, 4)
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[4, 8])
    with AttentionTracker(tmp_path / "a", probe, ("gradcam", "saliency"), measures=(*DEFAULT, "blankout_rho")) as t:
        declared = t.epoch_end(model, 0, 0)
    with AttentionTracker(tmp_path / "b", probe, ("gradcam", "saliency"), causal=CausalMeasures(grid=8)) as t:
        measured = t.epoch_end(model, 0, 0)
    for m in ("gradcam", "saliency"):
        assert declared[f"{m}/blankout_rho"] is not None
        assert declared[f"{m}/blankout_rho"] == pytest.approx(measured[f"{m}/blankout_rho"], abs=1e-6)
    assert model.training  # left as found
    with pytest.raises(InputError, match="scorer"):
        from attnscope.track.measures import measure

        measure({"x": torch.rand(4, 32, 32)}, probe, probe.labels, measures=("blankout_rho",))


def test_train_cli_records_faithfulness_and_resumes_it(tmp_path) -> None:
    from click.testing import CliRunner

    from attnscope.cli import cli

    out = tmp_path / "run"
    base = ["train", "--model", "smallcnn", "--model-opt", "widths=[4,8]", "--data", "clutter-decoy", "--n", "64",
            "--n-test", "16", "--batch-size", "32", "--data-opt", "size=32", "--data-opt", "digit_size=[8,12]",
            "--out", str(out), "--quiet"]
    first = CliRunner().invoke(cli, [*base, "--epochs", "1", "--track", "gradcam", "--probe", "8", "--track-split",
                                     "train", "--track-faithfulness", "--track-measures", "pointing"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, [*base, "--epochs", "2", "--resume"])  # the store's own settings continue
    assert again.exit_code == 0, again.output
    store = TrackStore.open(out / "track")
    assert store.settings["causal"]["parts"] == ["digit", "fragments", "decoy"] and len(store.snapshots) == 3
    assert {"gradcam/blankout_rho", "parts/top@decoy", "gradcam/pointing@decoy"} <= set(store.snapshots[-1]["measures"])
    clash = CliRunner().invoke(cli, [*base[:-3], "--out", str(tmp_path / "b"), "--epochs", "1", "--track", "gradcam",
                                     "--probe", "8", "--track-faithfulness", "--track-measures", "blankout_rho"])
    assert clash.exit_code != 0 and "keep one" in str(clash.exception)
    assert not (tmp_path / "b" / "config.json").exists()  # refused before anything is written


def test_the_unperturbed_pass_runs_once_per_snapshot() -> None:
    """blank-out, part removal and substitution share f(x): P + P·G² + (parts present) + 2P rows, not 3P more; the
    references equal those computed with their own unperturbed pass, and a base of the wrong shape is refused."""
    torch.manual_seed(0)
    model = ats.models.get("pooling-cnn", widths=[8, 16], pool="attention").eval()
    x, labels = torch.rand(6, 3, 16, 16), torch.arange(6) % 3
    rows: list[int] = []
    handle = model.register_forward_pre_hook(counting(rows))
    try:
        CausalMeasures(grid=2, sinks=False)(model, x, labels, {"m": torch.rand(6, 16, 16)}, {})
    finally:
        handle.remove()
    assert sum(rows) == 6 + 6 * 4 + 2 * 6
    with evaluating(model):
        f = logit_scorer(model, labels)
        base = f(x, torch.arange(6))
        torch.testing.assert_close(causal.blank_out(f, x, 2, base=base), causal.blank_out(f, x, 2), rtol=0, atol=0)
        with pytest.raises(InputError, match="base must be"):
            causal.blank_out(f, x, 2, base=base[:3])


def test_the_scorer_runs_in_the_chunk_the_probe_measures_fastest(monkeypatch) -> None:
    """batch_size=None: per-input time by hand, least at 8 inputs per forward, so the blank-out's 96 rows and the
    base's 64 run in forwards of 8 (one probe for both: the choice is cached per architecture and kind), with the
    logits of a fixed chunk to rounding; a chunk asked for is kept; `fixed_chunks` gives the budget's."""
    from attnscope.explain import budget

    monkeypatch.setattr(budget, "_FASTEST", {})
    monkeypatch.setattr(budget, "_seconds", lambda run, n, device: (run(n), n * (0.1 * abs(n - 8) + 1))[1])
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[4, 6]).eval()
    x, labels = torch.rand(64, 3, 8, 8), torch.arange(64) % 10
    rows: list[int] = []
    handle = model.register_forward_pre_hook(counting(rows))
    try:
        with evaluating(model):
            f = logit_scorer(model, labels)
            base = f(x, torch.arange(64))
            assert rows == [2, 2, 4, 4, 8, 8, 16, 16, 32, 32] + [8] * 8  # probe: each size twice to 32 (two no
            # faster than 8), then the 64 in 8s
            rows.clear()
            ref = causal.blank_out(f, x[:6], 4, base=base[:6])  # 6 · 16 = 96 rows, built 256 at a time
            assert rows == [8] * 12  # no second probe
            fixed = logit_scorer(model, labels, batch_size=96)
            rows.clear()
            torch.testing.assert_close(causal.blank_out(fixed, x[:6], 4, base=base[:6]), ref, rtol=0, atol=1e-6)
            assert rows == [96]
            with budget.fixed_chunks():
                rows.clear()
                f(x, torch.arange(64))
                assert rows == [64]  # the budget's chunk: every input at once
    finally:
        handle.remove()
