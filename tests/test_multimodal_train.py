"""Training the image–text models: the contrastive loss and its positives, one-epoch runs through `fit` (with the
tracker on a captioner), and the captioner's probe of object words."""

from __future__ import annotations

import math

import pytest
import torch

from attnscope.data import DigitScenes
from attnscope.data.scenes import phrases
from attnscope.errors import InputError
from attnscope.track.probe import caption_probe
from attnscope.track.store import TrackStore
from attnscope.train import TrainConfig, fit
from attnscope.train.multimodal import Contrastive, contrastive_loss

SCENES = {"size": 48, "digit_size": [10, 14]}
SMALL = {"image_size": 48, "patch_size": 8, "dim": 16, "depth": 1, "heads": 2}


def test_contrastive_loss_spreads_each_rows_target_over_its_positives() -> None:
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    positives = torch.tensor([[True, True], [False, True]])  # text 1 is true of both images
    lse = lambda row: math.log(sum(math.exp(v) for v in row))  # noqa: E731
    image_to_text = (0.5 * (lse([2, 0]) - 2) + 0.5 * (lse([2, 0]) - 0)) + (lse([1, 3]) - 3)
    text_to_image = (lse([2, 1]) - 2) + (0.5 * (lse([0, 3]) - 0) + 0.5 * (lse([0, 3]) - 3))
    expected = 0.5 * (image_to_text / 2 + text_to_image / 2)
    assert contrastive_loss(logits, positives).item() == pytest.approx(expected, rel=1e-6)


def test_a_phrase_is_a_positive_of_every_image_that_holds_its_object() -> None:
    data = DigitScenes("train", 40, **SCENES)
    task = Contrastive(TrainConfig(model="clip-tiny", data="scenes", task_cfg={"phrase_prob": 1.0}))
    samples = [data[i] for i in range(40)]
    torch.manual_seed(0)
    batch = task.collate(samples)
    held = [{(o.colour, o.digit) for o in s.objects} for s in samples]
    for j, text in enumerate(batch.texts):
        assert text in [p for p, _ in phrases(samples[j])]
        owners = {i for i, h in enumerate(held) if any(f"a {c} " in text and text.endswith(w) for c, d in h
                                                        for w in [_word(d)])}
        assert set(batch.positives[:, j].nonzero()[:, 0].tolist()) == owners
    assert batch.positives.sum() > 40  # some phrases are true of several scenes


def _word(digit: int) -> str:
    from attnscope.data.digits import NUMBER_WORDS

    return NUMBER_WORDS[digit]


def test_clip_tiny_trains_for_an_epoch_and_reports_retrieval(tmp_path) -> None:
    config = TrainConfig(model="clip-tiny", data="scenes", out=str(tmp_path / "clip"), n=32, n_test=16, epochs=1,
                         batch_size=16, data_cfg=SCENES, model_cfg={**SMALL, "text_dim": 16, "text_depth": 1,
                                                                    "text_heads": 2, "embed_dim": 8}, quiet=True)
    run = fit(config)
    record = run.history[-1]
    assert {"test_phrase_recall", "test_retrieval", "train_acc"} <= set(record)
    assert 0 <= record["test_retrieval"] <= 1


def test_captioner_tiny_trains_with_the_tracker_and_records_each_object_word(tmp_path) -> None:
    from attnscope.track.fit import FitTracker

    config = TrainConfig(model="captioner-tiny", data="scenes", out=str(tmp_path / "cap"), n=32, n_test=8, epochs=1,
                         batch_size=16, data_cfg=SCENES, model_cfg={**SMALL, "decoder_depth": 1, "max_len": 12},
                         task_cfg={"eval_n": 4}, quiet=True)
    fit(config, callbacks=(FitTracker(["gradcam", "cross-attention", "chefer-mm"], probe=2),))
    store = TrackStore.open(tmp_path / "cap" / "track")
    probe = store.probe()
    expected = caption_probe(DigitScenes("test", 8, **SCENES), 2)
    assert probe.texts == expected.texts and torch.equal(probe.labels, expected.labels)
    assert [s["step"] for s in store.snapshots] == [0, 2]
    measures = store.snapshots[-1]["measures"]
    assert {"cross-attention/pointing@box", "chefer-mm/energy_box@box", "probe_acc"} <= set(measures)
    assert store.maps(2)["gradcam"].shape == (len(probe.texts), 48, 48)


def test_the_captioners_probe_holds_each_object_word_with_its_box() -> None:
    data = DigitScenes("test", 3, **SCENES)
    probe = caption_probe(data, 3)
    vocab = data.vocabulary()
    rows = [(i, t, tok) for i in range(3) for t, tok in enumerate(data[i].alignments[0]) if tok.box is not None]
    assert len(probe.texts) == len(rows)
    for p, (i, t, tok) in enumerate(rows):
        words = [w.word for w in data[i].alignments[0][: t + 1]]
        assert probe.texts[p] == " ".join(words) and probe.texts[p].split()[-1] == tok.word
        assert int(probe.labels[p]) == vocab.index(tok.word)
        assert tuple(probe.regions["box"][p].tolist()) == tok.box
        assert torch.equal(probe.images[p], data[i].image)
    with pytest.raises(InputError):
        Contrastive(TrainConfig(model="clip-tiny", data="scenes", task_cfg={"phrase_prob": 2.0}))
