"""Supervised attention for captioning (Liu et al., AAAI 2017): target maps from boxes, the penalty by hand,
the per-word boxes of a batch, the guide and the task agreeing, and a few steps that pull α into the boxes."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnscope import guide, models
from attnscope.data import DigitScenes, collate_captions
from attnscope.errors import InputError, NotApplicableError
from attnscope.guide.captions import attention_supervision, box_attention, caption_attention
from attnscope.train import TrainConfig
from attnscope.train.captioning import Captioning

VOCAB = DigitScenes.vocabulary()
CPU = torch.device("cpu")


def test_box_attention_is_each_cells_share_of_the_box_by_hand():
    boxes = torch.tensor([[[1, 0, 3, 2], [0, 0, 4, 3], [-1, -1, -1, -1]]])  # (B=1, T=3, 4)
    beta, has = box_attention(boxes, grid=(2, 2), size=(4, 4))  # 2 px cells
    assert has.tolist() == [[True, True, False]]
    assert torch.allclose(beta[0, 0], torch.tensor([0.5, 0.5, 0.0, 0.0]))  # the box covers half of cells 0 and 1
    # x: 2 px in cell 0, 2 in cell 1; y: 2 px in row 0, 1 in row 1 → areas 4, 4, 2, 2 of 12
    assert torch.allclose(beta[0, 1], torch.tensor([4, 4, 2, 2]) / 12)
    assert beta[0, 2].abs().sum() == 0
    third, _ = box_attention(torch.tensor([[[0, 0, 4, 3]]]), grid=(2, 2), size=(6, 6))  # 3 px cells
    assert torch.allclose(third[0, 0], torch.tensor([9, 3, 0, 0]) / 12)
    with pytest.raises(InputError, match="leaves the 4x4 image"):
        box_attention(torch.tensor([[[0, 0, 5, 2]]]), (2, 2), (4, 4))
    with pytest.raises(InputError, match=r"\(B, T, 4\)"):
        box_attention(torch.zeros(2, 4, dtype=torch.long), (2, 2), (4, 4))


def test_penalty_is_the_cross_entropy_of_words_with_a_box_by_hand():
    alphas = torch.tensor([[[0.4, 0.1, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]]])  # (B=1, T=2, L=4)
    beta = torch.tensor([[[0.75, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    has = torch.tensor([[True, False]])
    by_hand = -(0.75 * math.log(0.4) + 0.25 * math.log(0.1))
    assert attention_supervision(alphas, beta, has).item() == pytest.approx(by_hand, rel=1e-6)
    # its minimum over α is at α = β, where it is the entropy of β
    at_beta = attention_supervision(torch.tensor([[[0.75, 0.25, 1e-9, 1e-9]]]), beta[:, :1], has[:, :1])
    assert at_beta.item() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-5)
    with pytest.raises(InputError, match="must agree"):
        attention_supervision(alphas, beta[:, :1], has)


def test_a_batch_carries_the_box_of_each_target_word_of_the_chosen_reference():
    ds = DigitScenes("train", 2, size=48, digit_size=(10, 14), gap=2)
    samples = [ds[i] for i in range(2)]
    batch = collate_captions(samples, VOCAB, reference=1)
    assert batch.boxes.shape == (2, batch.captions.shape[1] - 1, 4)
    for row, s in enumerate(samples):
        tokens = s.alignments[1]
        for t in range(batch.boxes.shape[1]):
            expected = tokens[t].box if t < len(tokens) and tokens[t].box is not None else (-1, -1, -1, -1)
            assert tuple(batch.boxes[row, t].tolist()) == tuple(expected)
        assert VOCAB.itos[int(batch.captions[row, 1 + len(tokens)])] == "<end>"  # the <end> step has no box


def _tiny_sat() -> torch.nn.Module:
    return models.get("sat", vocab=VOCAB.to_json(), encoder_widths=[8, 16], embed_dim=16, hidden_dim=24,
                      attn_dim=12, dropout=0.0)


def test_guide_and_task_agree_and_the_task_adds_lambda_times_the_penalty():
    torch.manual_seed(0)
    model = _tiny_sat().eval()
    ds = DigitScenes("train", 3, size=48, digit_size=(10, 14), gap=2)
    batch = collate_captions([ds[i] for i in range(3)], VOCAB, reference=0)
    penalty, logits = caption_attention(model, batch.images, batch.captions, batch.boxes)
    out = model(batch.images, batch.captions)
    assert torch.allclose(logits, out.logits)
    beta, has = box_attention(batch.boxes, out.grid, (48, 48))
    assert torch.allclose(penalty, attention_supervision(out.alphas, beta, has).mean())
    plain, guided = Captioning(TrainConfig(model="sat", data="scenes")), Captioning(
        TrainConfig(model="sat", data="scenes", guide="sat", guide_weight=2.5))
    for task in (plain, guided):
        task.model_kwargs(ds)
    base, _ = plain.loss(model, batch, CPU)
    total, stats = guided.loss(model, batch, CPU)
    assert torch.allclose(total, base + 2.5 * penalty, atol=1e-5)
    assert stats["guide"] == pytest.approx(3 * penalty.item(), rel=1e-5)
    assert guide.GUIDES.get("sat").weight == 1.0


def test_a_few_steps_on_the_penalty_pull_attention_into_the_words_boxes():
    torch.manual_seed(0)
    model = _tiny_sat()
    ds = DigitScenes("train", 16, size=48, digit_size=(10, 14), gap=2)
    batch = collate_captions([ds[i] for i in range(16)], VOCAB, reference=0)

    def mass() -> float:
        with torch.no_grad():
            out = model.eval()(batch.images, batch.captions)
        beta, has = box_attention(batch.boxes, out.grid, (48, 48))
        return float(((beta > 0) * out.alphas).sum(-1)[has].mean())  # α's share in the box's cells

    before = mass()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(15):
        model.train()
        penalty, _ = caption_attention(model, batch.images, batch.captions, batch.boxes)
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
    assert before < 0.06 and mass() > before + 0.15, (before, mass())  # 0.05 → ~0.3


def test_bad_uses_fail_with_one_clear_error():
    model = _tiny_sat()
    ds = DigitScenes("train", 1, size=48, digit_size=(10, 14), gap=2)
    batch = collate_captions([ds[0]], VOCAB)
    with pytest.raises(InputError, match="boxes must be"):
        caption_attention(model, batch.images, batch.captions, batch.boxes[:, :2])
    with pytest.raises(NotApplicableError, match="not a captioner"):
        caption_attention(models.get("smallcnn"), batch.images, batch.captions, batch.boxes)
    with pytest.raises(InputError, match="only --guide sat"):
        Captioning(TrainConfig(model="sat", data="scenes", guide="cam"))
    no_boxes = [ds[0]._replace(alignments=None)]
    task = Captioning(TrainConfig(model="sat", data="scenes", guide="sat"))
    with pytest.raises(InputError, match="words come with boxes"):
        task.check(no_boxes)


@pytest.mark.slow
def test_the_example_pulls_attention_onto_the_named_objects():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "examples" / "supervised_attention.py"), "--steps", "20"],
                          capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = (float(line.rsplit(" ", 1)[1]) for line in done.stdout.splitlines())
    assert after > before + 0.1, done.stdout
