"""Progress inside an explain call (`explain.progress`): each method's start and end, and every rerun of the
model with its number of inputs, so bars move within a batch while re-running methods work."""

from __future__ import annotations

import torch

import attnscope as ats
from attnscope import console
from attnscope.explain import progress


def small():
    torch.manual_seed(0)
    return ats.models.get("smallcnn", num_classes=10, widths=[4, 4, 8, 8]).eval()


def test_every_method_and_every_rerun_is_reported_with_its_inputs():
    events = []
    options = {"ig": {"steps": 8}, "occlusion": {"window": 16, "stride": 16}, "smoothgrad:gradcam": {"n": 4}}
    with progress.reporting(lambda *e: events.append(e)):
        ats.explain(small(), torch.rand(3, 3, 32, 32), ("gradcam", "ig", "occlusion", "smoothgrad:gradcam"),
                    options=options, batch_size=2)
    for part in (2, 1):  # batch_size=2: two calls, each with its shared pass and its methods
        start = events.index(("inputs", None, part))
        assert events[start : start + 4] == [("inputs", None, part), ("start", "gradcam", 0), ("done", "gradcam", part),
                                             ("start", "ig", 0)]
        assert events[start + 4] == ("inputs", None, 8 * part)  # IG: 8 path points per image
        assert events[start + 5 : start + 8] == [("done", "ig", part), ("start", "occlusion", 0),
                                                 ("inputs", None, 4 * part)]  # 4 windows of 16 px on 32 px
        assert events[start + 8 : start + 10] == [("done", "occlusion", part), ("start", "smoothgrad:gradcam", 0)]
        assert events[start + 10 : start + 15] == [("inputs", None, part)] * 4 + [("done", "smoothgrad:gradcam", part)]
    assert len(events) == 30


def test_nothing_is_reported_outside_the_block_and_a_bar_moves_by_images_of_finished_methods():
    events = []
    with progress.reporting(lambda *e: events.append(e)):
        pass
    ats.explain(small(), torch.rand(1, 3, 32, 32), "ig")
    assert events == []

    class Recorder:
        def __init__(self):
            self.calls = []

        def advance(self, n=1, **fields):
            self.calls.append((n, fields))

    bar = Recorder()
    with progress.reporting(progress.to_bar(bar)):
        ats.explain(small(), torch.rand(2, 3, 32, 32), ("gradcam", "ig"), options={"ig": {"steps": 4}})
    assert sum(n for n, _ in bar.calls) == 4  # 2 images × 2 methods
    assert (0, {"method": "ig", "passes": 8}) in bar.calls  # the text moves during IG's passes
    with console.progress(4, "explain", enabled=False) as quiet, progress.reporting(progress.to_bar(quiet)):
        ats.explain(small(), torch.rand(1, 3, 32, 32), "gradcam")  # a disabled bar takes the events too
