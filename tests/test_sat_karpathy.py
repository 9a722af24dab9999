"""Karpathy-split caption files: loading, a shared vocabulary with <unk>, typed errors, and vocabulary checks."""

import json

import numpy as np
import pytest
from PIL import Image

from attnscope import data
from attnscope.data import KarpathyCaptions, Vocabulary
from attnscope.errors import CheckpointError, DataError, InputError
from attnscope.train import TrainConfig, fit

CAPTIONS = {
    "train": [["a dog runs on grass", "a brown dog runs"], ["a dog on the beach", "two dogs play"],
              ["a cat sleeps", "a cat on a sofa"], ["a man rides a bike", "a dog and a man"]],
    "val": [["a bird flies"]],
    "test": [["a dog jumps", "a brown dog jumps high"]],
}


def make_fixture(root, captions=CAPTIONS) -> tuple:
    """Tiny PNGs of different sizes in `root/images` (one in a sub-folder) and the JSON describing them."""
    images, entries = root / "images", []
    (images / "sub").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    k = 0
    for split, groups in captions.items():
        for sentences in groups:
            name, filepath = f"im{k}.png", "sub" if k == 1 else ""
            size = (20 + 2 * k, 24)
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(images / filepath / name)
            sents = [{"tokens": s.split(), "raw": s.capitalize() + "."} for s in sentences]
            if k == 2:  # a sentence with only the raw text
                sents[0] = {"raw": sentences[0].upper() + "!"}
            entry = {"filename": name, "split": split, "sentences": sents, "imgid": k}
            if filepath:
                entry["filepath"] = filepath
            entries.append(entry)
            k += 1
    path = root / "dataset_tiny.json"
    path.write_text(json.dumps({"dataset": "tiny", "images": entries}))
    return path, images


def test_splits_captions_images_and_a_vocabulary_of_the_training_captions(tmp_path):
    path, images = make_fixture(tmp_path)
    train = KarpathyCaptions(path, images, "train", size=32, min_count=2)
    test = data.get("karpathy", "test", 100, 0, json=str(path), images=str(images), size=32, min_count=2)
    assert len(train) == 4 and len(test) == 1 and test.kind == "captioning"
    s = train[1]
    assert s.image.shape == (3, 32, 32) and s.filename == "sub/im1.png"
    assert s.captions == ["a dog on the beach", "two dogs play"]
    assert train[2].captions[0] == "a cat sleeps !"  # from "raw": tokenised like every caption
    # words seen at least twice in the training captions, most frequent first
    assert train.vocabulary() == Vocabulary(["a", "dog", "on", "cat", "man", "runs"])
    assert test.vocabulary() == train.vocabulary()  # every split shares the training vocabulary
    assert train.vocabulary().encode("a dog jumps") == [1, 4, 5, 3, 2]  # "jumps" → <unk>
    assert len(KarpathyCaptions(path, images, "train", n=2, size=32)) == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: "{not json", "is not valid JSON"),
        (lambda d: [], "a list under \"images\""),
        (lambda d: {"dataset": "x"}, "a list under \"images\""),
        (lambda d: d["images"][3].pop("filename") and d, r"images\[3\] has no \"filename\""),
        (lambda d: d["images"][0].pop("split") and d, r"images\[0\] has no \"split\""),
        (lambda d: d["images"][1].pop("sentences") and d, r"images\[1\] has no \"sentences\""),
        (lambda d: d["images"][0]["sentences"][1].pop("tokens") and d["images"][0]["sentences"][1].pop("raw") and d,
         r"im0.png\): sentences\[1\] has no \"tokens\""),
        (lambda d: d["images"][0]["sentences"].append({"tokens": []}) or d, r"sentences\[2\] is an empty caption"),
        (lambda d: d["images"][4].update(split="dev") or d, r"\"split\" must be one of"),
    ],
)
def test_malformed_or_incomplete_files_raise_data_errors_naming_the_entry(tmp_path, edit, message):
    path, images = make_fixture(tmp_path)
    doc = edit(json.loads(path.read_text()))
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataError, match=message) as info:
        KarpathyCaptions(path, images, "train", size=32)
    assert "dataset_tiny.json" in str(info.value)


def test_missing_files_and_options_are_named(tmp_path):
    path, images = make_fixture(tmp_path)
    (images / "im3.png").unlink()
    with pytest.raises(DataError, match=r"image files not found: .*im3.png"):
        KarpathyCaptions(path, images, "train")
    assert len(KarpathyCaptions(path, images, "test")) == 1  # other splits are fine
    with pytest.raises(DataError, match="caption file not found"):
        KarpathyCaptions(tmp_path / "nope.json", images, "train")
    with pytest.raises(InputError, match="needs json=PATH"):
        data.get("karpathy", "train", 10, 0, images=str(images))
    with pytest.raises(DataError, match="no images in split 'restval'"):
        KarpathyCaptions(path, images, "restval")


def test_resuming_on_an_edited_caption_file_refuses_weights_of_another_vocabulary(tmp_path):
    path, images = make_fixture(tmp_path)
    cfg = TrainConfig(model="sat", data="karpathy", out=str(tmp_path / "run"), n=4, n_test=1, epochs=2, batch_size=2,
                      quiet=True, data_cfg={"json": str(path), "images": str(images), "size": 32, "min_count": 1},
                      model_cfg={"encoder_widths": [8, 16], "hidden_dim": 16, "attn_dim": 8, "embed_dim": 8,
                                 "max_len": 6})
    run = fit(cfg, until_epoch=1)
    assert "test_bleu4" in run.history[-1] and "test_grounding" not in run.history[-1]  # no boxes in this data
    edited = {s: [[c.replace("dog", "cow") for c in g] for g in groups] for s, groups in CAPTIONS.items()}
    make_fixture(tmp_path, edited)  # same number of words, one of them different
    with pytest.raises(CheckpointError, match="another vocabulary"):
        fit(TrainConfig(**{**cfg.to_dict(), "resume": True}))
