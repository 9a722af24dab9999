"""The tracker's store (float16 maps, atomic index, truncation) and its measures, on hand-made maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from attnscope import fileio
from attnscope.errors import DataError
from attnscope.metrics import entropy
from attnscope.track import Probe, TrackStore, measure
from attnscope.track.store import decode, encode


def _probe(p: int = 3, size: int = 8) -> Probe:
    return Probe(torch.rand(p, 3, size, size), torch.arange(p), {"box": torch.tensor([[0, 0, 4, 4]] * p)})


def test_float16_encoding_keeps_three_significant_digits_of_any_magnitude():
    maps = torch.randn(4, 8, 8) * torch.tensor([1e-7, 1.0, 3e4, 0.0])[:, None, None]
    half, scale = encode(maps)
    assert half.dtype == np.float16 and scale.dtype == np.float32
    back = decode(half, scale)
    peak = maps.abs().flatten(1).amax(1)[:, None, None]
    assert ((back - maps).abs() <= 2**-11 * peak + 1e-30).all()  # float16 rounding, relative to the peak
    assert (back[3] == 0).all()  # an all-zero map stays exactly zero


def test_agreement_and_change_are_scipys_spearman_with_ties():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 5, (4, 6, 6), generator=g).float()  # many ties
    b = a + torch.randint(0, 3, (4, 6, 6), generator=g).float()
    probe = Probe(torch.rand(4, 3, 6, 6), torch.arange(4))
    out = measure({"a": a, "b": b}, probe, torch.arange(4), previous={"a": -a, "b": b})
    rho = [spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(4)]
    assert out["agreement/a~b"] == pytest.approx(float(np.mean(rho)), abs=1e-6)
    assert out["a/change"] == pytest.approx(2.0) and out["b/change"] == pytest.approx(0.0)
    a[0] = 1.0  # a constant map has no ranking: image 0 is left out of the mean
    out = measure({"a": a, "b": b}, probe, torch.arange(4))
    assert out["agreement/a~b"] == pytest.approx(float(np.mean(rho[1:])), abs=1e-6)
    assert measure({"a": torch.ones(2, 3, 3), "b": torch.ones(2, 3, 3)}, _probe(2, 3), torch.arange(2))[
        "agreement/a~b"] is None


def test_entropy_of_peaked_flat_and_empty_maps():
    one = torch.zeros(1, 4, 4)
    one[0, 1, 2] = 5.0
    half = torch.zeros(1, 4, 4)
    half[0, :2] = 1.0  # mass spread evenly over 8 of 16 pixels: log 8 / log 16 = 3/4
    flat, empty = torch.ones(1, 4, 4), -torch.ones(1, 4, 4)
    assert entropy(torch.cat([one, half, flat, empty])).tolist() == pytest.approx([0.0, 0.75, 1.0, 1.0])


def test_measures_of_hand_made_maps():
    box, decoy = torch.tensor([[0, 0, 4, 4]] * 2), torch.tensor([[6, 6, 8, 8]] * 2)  # top-left 4x4, bottom-right 2x2
    probe = Probe(torch.rand(2, 3, 8, 8), torch.arange(2), {"box": box, "decoy": decoy})
    m = torch.zeros(2, 8, 8)
    m[0, 1, 1], m[0, 7, 7] = 3.0, 1.0  # 3/4 of the mass in the box, 1/4 on the decoy; peak in the box
    m[1, 7, 6], m[1, 0, 0] = 2.0, 2.0  # half and half; first arg-max (raster order) is (0, 0), in the box
    other = -m
    out = measure({"a": m, "b": other}, probe, torch.tensor([0, 0]), previous={"a": m})
    assert out["probe_acc"] == 0.5
    assert out["a/energy_box@box"] == pytest.approx((0.75 + 0.5) / 2)
    assert out["a/energy_box@decoy"] == pytest.approx((0.25 + 0.5) / 2)
    assert out["a/pointing@box"] == 1.0 and out["a/pointing@decoy"] == 0.0
    assert out["a/change"] == pytest.approx(0.0)  # same maps as the previous epoch
    assert out["agreement/a~b"] == pytest.approx(-1.0)
    assert out["b/energy_box@box"] == 0.0  # no positive mass
    flat = measure({"c": torch.zeros(2, 8, 8)}, probe, torch.tensor([0, 1]))
    assert flat["c/pointing@box"] == 0.0 and flat["c/entropy"] == 1.0  # arg-max (0, 0) of a flat map is no hit
    assert "b/change" not in out  # no previous maps for b


def test_store_round_trip_truncation_and_orphans(tmp_path):
    probe = _probe()
    store = TrackStore.create(tmp_path / "track", {"methods": ["a"]}, probe, steps_per_epoch=3)
    maps = {f"step{s}": torch.randn(3, 8, 8) for s in (0, 2, 3)}
    for step in (0, 2, 3):
        store.add({"step": step, "epoch": step / 3, "kind": "step", "measures": {"x": step}},
                  {"a": maps[f"step{step}"]}, torch.tensor([step, 1, 2]))
    again = TrackStore.open(tmp_path / "track")
    assert [e["step"] for e in again.snapshots] == [0, 2, 3]
    assert torch.equal(again.probe().images, probe.images)  # float32, exact
    assert torch.allclose(again.maps(2)["a"], maps["step2"], atol=2**-11 * maps["step2"].abs().max())
    assert again.predictions(3).tolist() == [3, 1, 2]
    (tmp_path / "track" / "step_0000009.npz").write_bytes(b"orphan of a killed process")
    assert again.truncate(2) == [3]
    assert sorted(p.name for p in (tmp_path / "track").glob("step_*")) == ["step_0000000.npz", "step_0000002.npz"]
    assert [e["step"] for e in TrackStore.open(tmp_path / "track").snapshots] == [0, 2]
    with pytest.raises(DataError, match="already holds"):
        again.add({"step": 2, "epoch": 0, "kind": "step", "measures": {}}, {"a": maps["step2"]}, torch.zeros(3))


def test_a_crash_between_snapshot_and_index_leaves_a_valid_index(tmp_path, monkeypatch):
    store = TrackStore.create(tmp_path / "track", {}, _probe())
    store.add({"step": 0, "epoch": 0, "kind": "epoch", "measures": {}}, {"a": torch.ones(3, 8, 8)}, torch.zeros(3))
    before = (tmp_path / "track" / "index.json").read_text()

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "write_json", die)
    with pytest.raises(KeyboardInterrupt):
        store.add({"step": 5, "epoch": 1, "kind": "epoch", "measures": {}}, {"a": torch.ones(3, 8, 8)}, torch.zeros(3))
    assert (tmp_path / "track" / "index.json").read_text() == before
    assert (tmp_path / "track" / "step_0000005.npz").exists()
    assert not list((tmp_path / "track").glob(".*tmp"))  # no temporary file left behind
    monkeypatch.undo()
    reopened = TrackStore.open(tmp_path / "track")
    assert [e["step"] for e in reopened.snapshots] == [0]
    reopened.truncate(0)
    assert not (tmp_path / "track" / "step_0000005.npz").exists()


def test_corrupt_store_files_raise_data_errors(tmp_path):
    store = TrackStore.create(tmp_path / "track", {}, _probe())
    store.add({"step": 0, "epoch": 0, "kind": "epoch", "measures": {}}, {"a": torch.ones(3, 8, 8)}, torch.zeros(3))
    path = tmp_path / "track" / "step_0000000.npz"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match="unreadable"):
        store.maps(0)
    (tmp_path / "track" / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable tracker index"):
        TrackStore.open(tmp_path / "track")
    (tmp_path / "track" / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not an attnscope tracker index"):
        TrackStore.open(tmp_path / "track")
    with pytest.raises(DataError, match="no tracker store"):
        TrackStore.open(tmp_path / "nowhere")
    with pytest.raises(DataError, match="boxes"):
        Probe(torch.rand(2, 3, 8, 8), torch.arange(2), {"box": torch.zeros(3, 4)})
