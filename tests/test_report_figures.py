"""What the pictures say: the colour rule (sequential / signed), overlays computed by hand, colour bars,
flags on maps that say nothing, and the one-call `show`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps

import attnscope as ats
from attnscope.errors import InputError
from attnscope.maps import AttentionMap
from attnscope.report import colours, figures
from attnscope.report import grid as grid_module
from attnscope.report.flags import explain, flags, summary


@pytest.mark.parametrize("method, options, values, signed", [
    ("gradcam", {"relu": True}, [0.0, 1.0], False),
    ("cam", {"relu": False}, [0.0, 1.0], True),  # signed by its options even where every value is >= 0
    ("saliency", {"reduce": "abs-max"}, [0.0, 2.0], False),
    ("inputxgrad", {"reduce": "sum"}, [0.0, 2.0], True),
    ("occlusion", {}, [0.0, 2.0], True),  # a score change: signed by nature
    ("rollout", None, [0.1, 0.2], False),
    ("rollout", None, [-0.1, 0.2], True),  # any negative value makes a map signed
    (None, None, [float("nan"), 1.0], False),
])
def test_signed_or_sequential_follows_the_documented_rule(method, options, values, signed):
    assert colours.is_signed(torch.tensor(values).view(1, 1, 2), method, options) is signed


def test_limits_per_image_and_shared_percentile_by_hand():
    values = torch.tensor([[[-1.0, 0.5], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2)
    per_image = colours.scale(values, signed=True, percentile=100)
    assert per_image.low.tolist() == [-2.0, 0.0] and per_image.high.tolist() == [2.0, 0.0]
    p99 = colours.scale(values, signed=True)  # |v| sorted 0, 0.5, 1, 2: the 99th percentile is 1 + 0.97 (2 - 1)
    assert p99.high.tolist() == pytest.approx([1.97, 0.0]) and p99.unit(values)[0, 1, 1] == 1.0  # clipped
    sparse = torch.zeros(1, 10, 20)
    sparse[0, 0, 0] = -3.0  # 99.5 % zeros: the percentile is 0, the maximum is kept
    assert colours.scale(sparse, signed=True).high.tolist() == [3.0]
    unit = per_image.unit(values)
    assert unit[0].flatten().tolist() == [-0.5, 0.25, 0.0, 1.0] and unit[1].abs().sum() == 0  # all-zero: no NaN
    seq = colours.scale(values, signed=False)
    assert seq.low.tolist() == [-1.0, 0.0] and seq.high.tolist() == [2.0, 0.0]
    assert seq.unit(values)[0].flatten().tolist() == pytest.approx([0.0, 0.5, 1 / 3, 1.0])
    shared = colours.scale(torch.arange(101.0).view(1, 1, 101), signed=True, shared=True, percentile=90)
    assert shared.high.item() == pytest.approx(90.0) and shared.low.item() == pytest.approx(-90.0)


def test_signed_overlay_leaves_the_photo_where_the_map_is_zero_and_blends_by_hand_elsewhere():
    image = torch.full((3, 1, 3), 0.4)  # one row of three grey pixels
    values = torch.tensor([[-2.0, 0.0, 1.0]])  # (H, W) = (1, 3); limits ±2 (the 100th percentile)
    out = figures.overlay(image, values, limits=colours.scale(values[None], True, percentile=100)).astype(float)
    grey = round(0.4 * 255)
    assert out[0, 1].tolist() == [grey] * 3  # zero is transparent
    for x, v in ((0, -2.0), (2, 1.0)):
        a = colours.ALPHA[True] * abs(v) / 2
        expected = (1 - a) * grey + a * np.asarray(colormaps["RdBu_r"]((v / 2 + 1) / 2)[:3]) * 255
        assert out[0, x] == pytest.approx(expected.round(), abs=0.51)
    assert out[0, 0, 2] > out[0, 0, 0] and out[0, 2, 0] > out[0, 2, 2]  # negative blue, positive red


def test_sequential_overlay_is_inferno_at_constant_opacity_and_nan_is_transparent():
    image = torch.zeros(3, 1, 3)
    values = torch.tensor([[0.0, 1.0, float("nan")]])
    out = figures.overlay(image, values).astype(float)
    for x, u in ((0, 0.0), (1, 1.0)):
        assert out[0, x] == pytest.approx((0.5 * np.asarray(colormaps["inferno"](u)[:3]) * 255).round(), abs=0.51)
    assert out[0, 2].tolist() == [0, 0, 0]


def test_flags_name_maps_that_say_nothing():
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.rand(4, 4), torch.rand(4, 4),
                        torch.rand(4, 4)])
    maps[3, 1, 2] = float("nan")
    maps[4, 0, 0] = float("inf")
    assert flags(maps) == ["all zero", "constant", None, "nan", "inf"]
    assert explain("all zero", "gradient") == "all zero: the target's gradient is zero"
    assert explain("all zero", "transformer").startswith("all zero: ")
    assert summary(flags(maps), ["a", "b", "c", "d", "e"]) == {"all zero": ["a"], "constant": ["b"], "nan": ["d"],
                                                              "inf": ["e"]}


def test_grid_groups_by_kind_draws_colour_bars_and_writes_the_flag_on_the_tile():
    images = torch.full((2, 3, 8, 8), 0.5)
    varying = torch.linspace(-1, 1, 64).view(8, 8)
    maps = {"saliency": torch.stack([varying.abs(), varying.abs()]),
            "gradcam": torch.stack([varying.abs(), varying.abs()]),
            "ig": torch.stack([varying, torch.zeros(8, 8)])}
    kinds = {"saliency": "gradient", "gradcam": "cam", "ig": "gradient"}
    assert figures.by_kind(list(maps), kinds) == ["gradcam", "saliency", "ig"]
    scale = 4
    rgb = figures.grid(images, maps, kinds=kinds, zoom=scale)
    cw = ch = 8 * scale
    head = 2 * grid_module.LINE + 2

    def tile(i, j):
        y, x = head + i * (ch + 2), j * (cw + 2)
        return rgb[y : y + ch, x : x + cw]

    photo = tile(1, 0)
    flagged = tile(1, 3)  # ig of image 1 is all zero: signed, so fully transparent, plus its flag
    assert (flagged[ch // 2 :] == photo[ch // 2 :]).all()  # the photo shows through below the flag
    assert (flagged[:8] != photo[:8]).any() and (tile(0, 3)[:8] == figures.overlay(images[0], maps["ig"][0])
                                                 .repeat(scale, 0).repeat(scale, 1)[:8]).all()
    bar_y = head + 2 * (ch + 2) + 2
    for j, signed in ((1, False), (2, False), (3, True)):
        x = j * (cw + 2) + 2
        assert (rgb[bar_y : bar_y + 6, x : x + cw - 4] == colours.colour_bar(signed, cw - 4, 6)).all()


def test_drawing_refuses_maps_with_several_targets_per_image_naming_the_way_out():
    with pytest.raises(InputError, match=r"values\[:, k\]"):
        figures.overlay(torch.zeros(3, 4, 4), torch.zeros(1, 2, 4, 4))
    assert figures.as_batch(torch.zeros(2, 1, 4, 4)).shape == (2, 4, 4)


def test_elide_keeps_both_ends_so_neighbours_stay_apart():
    a, b = figures.elide("features.3.1.conv", 9), figures.elide("features.3.0.conv", 9)
    assert len(a) == 9 and a.startswith("feat") and a.endswith("conv") and figures.elide("short", 9) == "short"
    a, b = figures.elide("encoder.layers.3.1", 10), figures.elide("encoder.layers.3.0", 10)
    assert a != b


def _amap(values: torch.Tensor, method: str, meta: dict | None = None, targets=None) -> AttentionMap:
    b = values.shape[0]
    return AttentionMap(values, method, torch.zeros(b, dtype=torch.long) if targets is None else targets,
                        meta=meta or {})


def test_show_draws_every_method_with_a_colour_bar_titles_and_flags(tmp_path):
    images = torch.rand(2, 3, 8, 8)
    maps = {"ig": _amap(torch.stack([torch.randn(8, 8), torch.zeros(8, 8)]), "ig", {"reduce": "sum"},
                        torch.tensor([3, 5])),
            "gradcam": _amap(torch.rand(2, 8, 8), "gradcam", {"relu": True})}
    fig = ats.show(images, maps, boxes=[[1, 1, 4, 4], [0, 0, 8, 8]])
    assert isinstance(fig, ats.report.MapFigure)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:6] == ["image", "gradcam", "ig\nclass 3", "", "", "class 5"]  # cam before gradient
    assert [fig.axes[k].get_ylabel() for k in (0, 3)] == ["explains class 0"] * 2  # the row's class: gradcam's
    bars = [ax for ax in fig.axes if ax.get_label() == "colour bar"]
    assert len(bars) == 2
    labels = [[t.get_text() for t in bar.get_xticklabels()] for bar in bars]
    assert labels == [["min", "max"], ["-p99", "0", "+p99"]]
    assert "signed" in bars[1].get_xlabel() and "sequential" in bars[0].get_xlabel()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["all zero: the target's gradient is zero"]
    assert sum(len(ax.patches) for ax in fig.axes) == 6  # a box on each of 2 rows × 3 columns
    path = fig.save(tmp_path / "maps.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = ats.show(images[0], maps["ig"][0])  # one image: the colour bar states the values
    bar = next(ax for ax in one.axes if ax.get_label() == "colour bar")
    top = float(np.percentile(maps["ig"].values[0].abs().numpy(), 99))
    assert [t.get_text() for t in bar.get_xticklabels()] == [f"{-top:.3g}", "0", f"{top:.3g}"]


def test_show_picks_one_of_k_targets_or_draws_k_columns():
    images = torch.rand(2, 3, 4, 4)
    values = torch.rand(2, 3, 4, 4)  # (B, K, H, W)
    every = ats.show(images, values)  # K columns, one per target
    assert [ax.get_title() for ax in every.axes[:4]] == ["image", "map #1", "map #2", "map #3"]
    fig = ats.show(images, {"m": values}, targets=2)
    drawn = fig.axes[1].images[0].get_array()
    assert np.array_equal(np.asarray(drawn), figures.overlay(images[0], values[0, 2]))
    with pytest.raises(InputError, match="do not fit"):
        ats.show(images, torch.rand(3, 4, 4))
    multi = AttentionMap(values, "gradcam", torch.tensor([[1, 2, 3], [4, 5, 6]]), meta={"relu": True})
    one = ats.show(images, multi, targets=1)
    assert [ax.get_ylabel() for ax in one.axes[:4:2]] == ["explains class 2", "explains class 5"]  # column 1's
    with pytest.deprecated_call(match="targets=k"):  # the name before 0.2
        old = ats.show(images, multi, target=1)
    assert [ax.get_ylabel() for ax in old.axes[:4:2]] == ["explains class 2", "explains class 5"]


def test_pooled_scales_share_the_widest_limits_over_the_row_or_the_figure():
    a = colours.Scale(False, torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0]), "min–max per image")
    b = colours.Scale(False, torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 5.0]), "min–max per image")
    row_a, row_b = colours.pooled([a, b], rows=True)
    assert row_a.low.tolist() == row_b.low.tolist() == [-1.0, 0.5]
    assert row_a.high.tolist() == row_b.high.tolist() == [2.0, 5.0]
    fig_a, _ = colours.pooled([a, b], rows=False)
    assert fig_a.low.tolist() == [-1.0, -1.0] and fig_a.high.tolist() == [5.0, 5.0] and "figure" in fig_a.rule
    s = colours.Scale(True, torch.tensor([-2.0]), torch.tensor([2.0]), "±p99")
    t = colours.Scale(True, torch.tensor([-3.0]), torch.tensor([3.0]), "±p99")
    assert [x.high.item() for x in colours.pooled([s, t], rows=True)] == [3.0, 3.0]  # signed stays symmetric
    assert colours.weak(0.05, 1.0) and not colours.weak(0.2, 1.0) and not colours.weak(0.0, 0.0)


def test_a_weak_map_is_marked_and_a_shared_scale_draws_it_dim():
    images = torch.full((2, 3, 16, 16), 0.5)
    strong = torch.linspace(0, 1, 256).view(16, 16)
    maps = {"gradcam": torch.stack([strong, 0.05 * strong])}  # image 1: the same shape at 5 % of the peak
    zoom, head = 4, grid_module.LINE + 2
    ch = cw = 16 * zoom

    def tile(rgb, i):
        y, x = head + i * (ch + 2), cw + 2
        return rgb[y : y + ch, x : x + cw]

    own = figures.grid(images, maps, zoom=zoom)
    assert (tile(own, 0)[:ch // 2] == tile(own, 1)[:ch // 2]).all()  # scaled on its own: it looks as strong...
    assert (tile(own, 0)[-12:] != tile(own, 1)[-12:]).any()  # ...so it carries the mark at its foot
    assert (tile(own, 0)[-12:] == figures.overlay(images[0], strong).repeat(zoom, 0).repeat(zoom, 1)[-12:]).all()
    shared = figures.grid(images, maps, zoom=zoom, scale="figure")
    assert tile(shared, 1)[:ch // 2].astype(int).sum() < tile(shared, 0)[:ch // 2].astype(int).sum()  # dim
    with pytest.raises(InputError, match="scale must be one of image, row, figure"):
        figures.grid(images, maps, scale="column")


def test_a_wide_grid_wraps_into_bands_that_repeat_the_image_column_and_keep_row_labels():
    images = torch.rand(2, 3, 8, 8)
    maps = {f"m{k}": torch.rand(2, 8, 8) + k for k in range(5)}
    zoom = 4
    cw = ch = 8 * zoom
    one = figures.grid(images, maps, zoom=zoom)
    labelled = figures.grid(images, maps, zoom=zoom, rows=["first image", "second"])
    assert labelled.shape[1] > one.shape[1] and (labelled[:, :20] != 255).any()  # a label column, with text
    narrow = figures.grid(images, maps, zoom=zoom, width=4 * (cw + 2))  # room for the image and 3 methods
    band_h = grid_module.LINE + 2 + 2 * (ch + 2) + 12
    assert narrow.shape[1] == 4 * (cw + 2) and narrow.shape[0] > 2 * band_h
    y = band_h + 8 + grid_module.LINE + 2  # the second band's first row
    assert (narrow[y : y + ch, : cw] == figures.to_rgb(images[0]).repeat(zoom, 0).repeat(zoom, 1)).all()
    fourth = figures.overlay(images[0], maps["m3"][0]).repeat(zoom, 0).repeat(zoom, 1)
    assert (narrow[y : y + ch, cw + 2 : 2 * cw + 2] == fourth).all()  # m3 continues the second band
