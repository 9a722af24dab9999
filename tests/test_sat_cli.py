"""`explain(..., methods=("sat",))` and the `attnscope train --model sat` / `attnscope caption` commands."""

import json

import pytest
import torch
from PIL import Image

from attnscope import explain, models
from attnscope.cli import main
from attnscope.data import DigitScenes
from attnscope.errors import InputError, NotApplicableError
from attnscope.maps import SequenceMap
from attnscope.train.caption_eval import words_of

VOCAB = DigitScenes.vocabulary()
SCENES = ["--data-opt", "size=48", "--data-opt", "digit_size=[10,14]", "--data-opt", "gap=2"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = models.get("sat", vocab=VOCAB.to_json(), encoder_widths=[8, 16], embed_dim=16, hidden_dim=32,
                   attn_dim=16, dropout=0.0, max_len=9)
    with torch.no_grad():  # captions of different lengths
        for p in m.parameters():
            p.normal_(0, 0.6)
        m.decoder.out.bias[VOCAB.end_id] += 3.5
    return m


@pytest.fixture(scope="module")
def images():
    ds = DigitScenes("test", 5, size=48, digit_size=(10, 14), gap=2)
    return torch.stack([ds[i].image for i in range(5)])


def test_sat_maps_are_the_attention_of_each_generated_word(model, images):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = explain(model, images, ("sat",), options={"sat": {"beam_size": 2}})
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert sorted(maps) == ["sat"] and isinstance(maps["sat"], SequenceMap)
    assert maps.logits is None and maps.targets is None  # no shared pass: sat generates its own sequence
    seq = maps["sat"]
    model.eval()
    found = model.caption(images, beam_size=2)
    assert seq.words == words_of(found.tokens, VOCAB)
    t_max = found.tokens.shape[1]
    assert seq.values.shape == (5, t_max, 48, 48) and seq.lowres.shape == (5, t_max, 24, 24)
    for t in range(t_max):
        m = seq.step(t)
        assert m.values.shape == (5, 48, 48) and m.lowres.shape == (5, 24, 24)
        assert torch.allclose(m.lowres, found.alphas[:, t])
        emitted = seq.mask[:, t]
        assert torch.equal(emitted, m.targets >= 0)
        assert torch.allclose(m.lowres[emitted].sum((1, 2)), torch.ones(int(emitted.sum())), atol=1e-5)
        assert torch.allclose(m.values[emitted].sum((1, 2)), torch.ones(int(emitted.sum())), atol=0.02)  # per pixel
        assert torch.equal(m.targets[emitted], found.tokens[emitted, t])
    n_words = torch.tensor([len(w) for w in seq.words]).clamp_min(1)
    is_word = seq.mask & (seq.targets != VOCAB.end_id)
    mean = (seq.lowres * is_word[..., None, None]).sum(1) / n_words[:, None, None]
    assert torch.allclose(seq.mean().lowres, mean, atol=1e-6)
    assert seq.mean().values.shape == (5, 48, 48)


def test_chunked_explain_and_teacher_forced_captions(model, images):
    whole = explain(model, images, ("sat",))["sat"]
    parts = explain(model, images, ("sat",), batch_size=2)["sat"]
    assert parts.words == whole.words
    t = whole.values.shape[1]
    assert torch.equal(parts.mask[:, :t], whole.mask) and not parts.mask[:, t:].any()
    assert torch.allclose(parts.values[:, :t], whole.values, atol=1e-6)
    given = ["a red three above a blue seven", "a green nine", "purple", "a a a", "a white zebra"]
    forced = explain(model, images, ("sat",), options={"sat": {"captions": given}})["sat"]
    assert forced.words[:3] == [g.split() for g in given[:3]]
    assert forced.words[4] == ["a", "white", "<unk>"]  # words outside the vocabulary
    with pytest.raises(InputError, match="one caption per image"):
        explain(model, images, ("sat",), options={"sat": {"captions": given[:2]}})
    with pytest.raises(InputError, match="take.s. no targets"):
        explain(model, images, ("sat",), targets=3)
    with pytest.raises(NotApplicableError, match="not a captioning model"):
        explain(models.get("smallcnn"), images, ("sat",))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sat") / "run"
    main(["train", "--model", "sat", "--data", "scenes", "--attention", "hard", "--out", str(out), "--n", "32",
          "--n-test", "8", "--epochs", "1", "--batch-size", "16", "--quiet", *SCENES,
          "--model-opt", "encoder_widths=[8,16]", "--model-opt", "hidden_dim=32", "--model-opt", "max_len=12"])
    return out


def test_caption_command_writes_captions_strips_and_scores(run, tmp_path):
    header = json.loads((run / "model.json").read_text())
    assert header["model"]["config"]["attention"] == "hard" and header["model"]["config"]["vocab"] == VOCAB.to_json()
    out = tmp_path / "captions"
    main(["caption", "--checkpoint", str(run), "--images", "scenes", "--out", str(out), "--n", "3", "--quiet",
          "--beam-size", "2"])
    summary = json.loads((out / "captions.json").read_text())
    assert len(summary["images"]) == 3 and summary["beam_size"] == 2
    assert {"bleu1", "bleu4", "grounding_ref"} <= set(summary["metrics"])
    for record in summary["images"]:
        assert len(record["references"]) == 5 and record["caption"] == " ".join(record["words"])
        with Image.open(out / record["strip"]) as strip:
            strip.load()
        assert strip.size[0] == (1 + len(record["words"])) * (96 + 2)  # the image, then one overlay per word
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, s in enumerate(DigitScenes("test", 2, size=48, digit_size=(10, 14), gap=2)):
        Image.fromarray((s.image.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(folder / f"x{i}.png")
    main(["caption", "--checkpoint", str(run), "--images", str(folder), "--out", str(out), "--quiet", "--overwrite"])
    summary = json.loads((out / "captions.json").read_text())
    assert [r["image"] for r in summary["images"]] == ["x0.png", "x1.png"] and "metrics" not in summary
    assert sorted(p.name for p in (out / "attention").iterdir()) == ["x0.png", "x1.png"]


def test_caption_command_errors_leave_nothing_behind(run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for args, message in [
        (["--images", "scenes", "--out", str(taken)], "pass --overwrite"),
        (["--images", "scenes", "--out", str(taken), "--overwrite"], "does not hold an `attnscope caption` output"),
        (["--images", "scenes", "--out", str(tmp_path / "o"), "--beam-size", "100000"], "more than the model's"),
        (["--images", "nowhere", "--out", str(tmp_path / "o")], "neither an existing file"),
        (["--images", "clutter", "--out", str(tmp_path / "o")], "has no captions"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(["caption", "--checkpoint", str(run), *args, "--quiet"])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):  # `attnscope explain` is for classifiers
        main(["explain", "--checkpoint", str(run), "--images", "clutter", "--methods", "sat",
              "--out", str(tmp_path / "e")])
    assert "use `attnscope caption" in capsys.readouterr().err
    cnn = tmp_path / "cnn.safetensors"
    from attnscope.models import checkpoint

    checkpoint.save(models.get("smallcnn"), cnn)
    with pytest.raises(SystemExit):
        main(["caption", "--checkpoint", str(cnn), "--images", "scenes", "--out", str(tmp_path / "o"), "--quiet"])
    assert "not a captioning model" in capsys.readouterr().err
