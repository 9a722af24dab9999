"""Class names end to end: where a model's names come from, targets given by name, and the words pictures use."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import attnscope as ats
from attnscope.errors import InputError
from attnscope.explain.targets import class_index, close_names
from attnscope.models import checkpoint
from attnscope.report.labels import class_text, prob, row_labels

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def small(names=NAMES):
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", num_classes=10, widths=[4, 4, 8, 8]).eval()
    return model if names is None else ats.models.with_class_names(model, names)


class WithConfig(nn.Module):
    def __init__(self, id2label):
        super().__init__()
        self.config = SimpleNamespace(id2label=id2label)
        self.head = nn.Linear(2, len(id2label))


def test_class_names_from_the_attribute_the_wrapper_a_hf_config_and_a_checkpoint(tmp_path):
    model = small()
    assert ats.models.class_names(model) == NAMES
    assert ats.models.class_names(ats.models.normalized(model, "imagenet")) == NAMES  # passed through
    assert ats.models.class_names(small(None)) is None
    assert ats.models.class_names(WithConfig({"1": "dog", "0": "cat"})) == ("cat", "dog")  # keys may be text
    assert ats.models.class_names(WithConfig({0: "LABEL_0", 1: "LABEL_1"})) is None  # HF's generic labels
    assert ats.models.class_names(WithConfig({0: "cat", 2: "dog"})) is None  # not every index named
    checkpoint.save(model, tmp_path / "m.safetensors")
    again, header = checkpoint.load(tmp_path / "m.safetensors")
    assert ats.models.class_names(again) == NAMES and header["model"]["class_names"] == list(NAMES)


def test_a_run_trained_on_a_named_data_set_carries_its_names(tmp_path):
    from attnscope.train import TrainConfig, fit

    fit(TrainConfig(model="smallcnn", data="clutter", n=32, n_test=8, epochs=1, batch_size=32, quiet=True,
                    model_cfg={"widths": [4, 4, 8, 8]}, out=str(tmp_path / "run")))
    model, _ = checkpoint.load(tmp_path / "run")
    assert ats.models.class_names(model) == tuple("0123456789")


def test_with_class_names_reads_lists_files_and_checks_the_count(tmp_path):
    lines = tmp_path / "names.txt"
    lines.write_text("# my classes\nzero\n\n" + "\n".join(NAMES[1:]) + "\n")
    assert ats.models.class_names(ats.models.with_class_names(small(None), lines)) == NAMES
    as_json = tmp_path / "names.json"
    as_json.write_text(json.dumps(list(NAMES)))
    assert ats.models.class_names(ats.models.with_class_names(small(None), as_json)) == NAMES
    assert ats.models.class_names(ats.models.with_class_names(small(None), "digits")) == tuple("0123456789")
    with pytest.raises(InputError, match="3 class names for a model with 10 classes"):
        ats.models.with_class_names(small(None), ["a", "b", "c"])
    with pytest.raises(InputError, match="non-empty"):
        ats.models.with_class_names(small(None), ["a"] * 9 + [""])
    with pytest.raises(InputError, match="not found"):
        ats.models.with_class_names(small(None), tmp_path / "absent.txt")


def test_targets_by_name_give_the_maps_of_the_index():
    model, images = small(), torch.rand(3, 3, 32, 32)
    by_index = ats.explain(model, images, ("gradcam", "saliency"), targets=3)
    by_name = ats.explain(model, images, ("gradcam", "saliency"), targets="three")
    for m in by_index:
        assert torch.equal(by_index[m].values, by_name[m].values)
    assert by_name.targets.tolist() == [3, 3, 3] and by_name.class_names == NAMES
    assert ats.explain(model, images, "gradcam", targets="THREE").targets.tolist() == [3, 3, 3]  # any case
    per_image = ats.explain(model, images, "gradcam", targets=["one", "two", "nine"])
    assert per_image.targets.tolist() == [1, 2, 9]
    many = ats.explain(model, images, "gradcam", targets=[["one", "two"]] * 3)
    assert many.targets.tolist() == [[1, 2]] * 3
    assert torch.equal(many["gradcam"].values[:, 1], ats.explain(model, images, "gradcam", targets=2)["gradcam"].values)
    assert per_image[:2].class_names == NAMES  # slicing keeps the names


def test_a_name_that_is_not_there_is_refused_with_the_close_ones():
    with pytest.raises(InputError, match=r"no class is called 'thre'.*did you mean 'three'"):
        ats.explain(small(), torch.rand(1, 3, 32, 32), "gradcam", targets="thre")
    with pytest.raises(InputError, match="carries no class names"):
        ats.explain(small(None), torch.rand(1, 3, 32, 32), "gradcam", targets="three")
    with pytest.raises(InputError, match="2 classes for a batch of 3"):
        ats.explain(small(), torch.rand(3, 3, 32, 32), "gradcam", targets=["one", "two"])
    with pytest.raises(InputError, match=r"names 2 classes \(0, 2\)"):
        class_index("crane", ["crane", "heron", "crane"])
    assert close_names("cat", ["tabby cat", "catamaran", "dog", "Egyptian cat"]) == ["tabby cat", "Egyptian cat"]


def test_the_words_of_a_row_name_index_probability_truth_and_prediction():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.00002, 0.49998]])
    rows = row_labels(torch.tensor([1, 1]), ("cat", "dog", "owl"), probs, torch.tensor([1, 2]), ["a.png", "b.png"])
    assert rows == ["a.png\nexplains dog (1) p 0.70\nthe true class",
                    "b.png\nexplains dog (1) p <0.0001\ntrue owl (2) · predicted cat (0) p 0.50"]
    assert class_text(7) == "class 7" and class_text(-1) == "a score" and prob(0.00031) == "0.00031"


def test_show_labels_rows_by_name_with_the_probability_from_the_logits():
    model, images = small(), torch.rand(2, 3, 32, 32)
    maps = ats.explain(model, images, "gradcam", targets="three")
    p = maps.logits.softmax(1)[:, 3]
    fig = ats.show(images, maps, labels=[3, 5])
    top = maps.logits.softmax(1).max(1)
    said = [f"predicted {NAMES[int(c)]} ({int(c)}) p {prob(float(v))}" for v, c in zip(*top, strict=True)]
    first = f"explains three (3) p {prob(float(p[0]))}\nthe true class"
    assert fig.axes[0].get_ylabel() == (first if int(top.indices[0]) == 3 else f"{first} · {said[0]}")
    assert fig.axes[2].get_ylabel().splitlines()[1].startswith("true five (5)")
