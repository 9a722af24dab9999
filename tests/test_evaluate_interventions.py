"""Ground-truth interventions: exact counterfactual scenes, drops and masses by hand on a linear model."""

import pytest
import torch
from torch import nn

from attnscope import data
from attnscope.errors import InputError
from attnscope.evaluate.interventions import Scenes, clutter_scenes, digit_scenes, interventions


def test_clutter_without_a_part_changes_only_that_part():
    ds = data.get("clutter-decoy", "test", 3, seed=2)
    for i in range(3):
        s = ds[i]
        assert torch.equal(ds.without(i), s.image)  # nothing removed: the very same image
        no_digit = ds.without(i, "digit")
        changed = (no_digit - s.image).abs().sum(0) > 0
        x0, y0, x1, y1 = s.box.tolist()
        near = torch.zeros_like(changed)
        near[max(y0 - 4, 0) : y1 + 4, max(x0 - 4, 0) : x1 + 4] = True  # the box is the ink above a threshold
        assert changed[s.mask].all() and not (changed & ~near).any()  # the digit and its soft edge, nothing else
        no_decoy = ds.without(i, "decoy")
        dx0, dy0, dx1, dy1 = s.decoy_box.tolist()
        changed = (no_decoy - s.image).abs().sum(0) > 0
        assert changed[dy0:dy1, dx0:dx1].all() and changed.sum() == (dx1 - dx0) * (dy1 - dy0)
    with pytest.raises(InputError, match="unknown part"):
        ds.without(0, "cat")


def test_scene_without_an_object_keeps_the_others_and_the_noise():
    ds = data.get("scenes", "test", 2, seed=1)
    s = ds[0]
    assert torch.equal(ds.without(0), s.image)
    gone = ds.without(0, 0)
    changed = (gone - s.image).abs().sum(0) > 0
    x0, y0, x1, y1 = s.objects[0].box
    assert changed.any() and not changed[:, :x0].any() and not changed[:y0].any()
    assert not changed[:, x1:].any() and not changed[y1:].any()


def test_scene_builders_mark_regions_and_classes():
    clutter = clutter_scenes(data.get("clutter-decoy", "train", 2), 2)
    assert clutter.names == ["digit", "fragments", "decoy"] and clutter.present.all()
    assert clutter.classes[:, 0].tolist() == clutter.labels.tolist() == clutter.classes[:, 2].tolist()  # train
    assert (clutter.classes[:, 1] == -1).all()
    scenes = digit_scenes(data.get("scenes", "test", 3), 3)
    assert scenes.names[:2] == ["object 1", "object 2"] and (scenes.labels == -1).all()
    assert scenes.present.sum(1).min() >= 2


def test_scenes_with_fewer_objects_get_no_empty_row():
    from attnscope.evaluate.interventions import _groups

    scenes = digit_scenes(data.get("scenes", "test", 6, seed=3), 6)
    assert not scenes.present.all()  # some scenes have 2 digits, some 3
    _, rows = _groups(scenes, torch.zeros(6, dtype=torch.long))
    assert set(rows) <= {"digit (explained class)", "digit (other class)"}


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(w.shape[1], 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(w)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_interventions_by_hand_on_a_linear_model():
    h = w = 4
    image = torch.zeros(1, 1, h, w)
    image[0, 0, 0, :2] = 1.0  # part a: two pixels
    image[0, 0, 3, 3] = 2.0  # part b: one pixel
    regions = torch.zeros(1, 2, h, w, dtype=torch.bool)
    regions[0, 0, 0, :2] = True
    regions[0, 1, 3, 3] = True
    removed = image[:, None].repeat(1, 2, 1, 1, 1)
    removed[0, 0, 0, 0, :2] = 0
    removed[0, 1, 0, 3, 3] = 0
    weights = torch.zeros(3, h * w)
    weights[0] = 0.1
    weights[0, :2] = 3.0  # class 0 reads part a strongly, part b weakly
    scenes = Scenes(image, removed, regions, torch.ones(1, 2, dtype=torch.bool), ["a", "b"],
                    torch.tensor([[-1, -1]]), torch.tensor([0]))
    model = Linear(weights).eval()
    result = interventions(model, scenes, ["inputxgrad"], calibration=())
    p = lambda x: model(x).softmax(1)[:, 0]  # noqa: E731
    want = torch.stack([p(image) - p(removed[:, k]) for k in range(2)], 1).double()
    assert torch.allclose(result.drops, want.detach())
    # input × gradient for class 0 is x ⊙ w_0: 3 + 3 on part a, 0.1 · 2 on part b, 0 elsewhere
    assert result.mass["inputxgrad"][0].tolist() == pytest.approx([6 / 6.2, 0.2 / 6.2])
    assert result.background["inputxgrad"].item() == pytest.approx(0.0, abs=1e-12)
    row = result.summary()[0]
    assert row["single_deletion"] == pytest.approx(1.0) and row["top_part"] == 1.0
    table = {r["part"]: r for r in result.table("inputxgrad")}
    assert set(table) == {"a", "b", "background"} and table["a"]["n"] == 1
    with pytest.raises(InputError, match="targets"):
        interventions(model, scenes, ["inputxgrad"], targets="random")


def test_scene_with_distractors_without_no_object_is_the_scene_itself():
    """The distractors come from their own generator: the counterfactual keeps them where they were."""
    scenes = data.DigitScenes(n=3, size=96, distractors=3, seed=0)
    for i in range(3):
        assert torch.equal(scenes.without(i), scenes[i].image)
        if len(scenes[i].objects) > 1:
            assert not torch.equal(scenes.without(i, 0), scenes[i].image)
