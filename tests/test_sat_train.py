"""The captioning objective: the doubly stochastic term, the masked loss, REINFORCE's unbiasedness, a short fit."""

import pytest
import torch

from attnscope import models
from attnscope.data import DigitScenes, Vocabulary, collate_captions
from attnscope.errors import InputError
from attnscope.train import TrainConfig, fit
from attnscope.train.captioning import (
    Captioning,
    attention_entropy,
    doubly_stochastic,
    reinforce_term,
    sequence_nll,
)

VOCAB = DigitScenes.vocabulary()


def test_doubly_stochastic_term_on_hand_made_attention_counts_real_steps_only():
    alphas = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]])  # (B=1, T=3, L=2)
    # all steps: Σ_t α = (1.7, 1.3) → 0.7² + 0.3² = 0.58; last step padding: (1.5, 0.5) → 0.25 + 0.25
    assert torch.allclose(doubly_stochastic(alphas, torch.tensor([[1.0, 1.0, 1.0]])), torch.tensor([0.58]))
    assert torch.allclose(doubly_stochastic(alphas, torch.tensor([[1.0, 1.0, 0.0]])), torch.tensor([0.5]))
    uniform = torch.full((1, 4, 4), 0.25)  # four steps spread evenly over four positions: each sums to 1
    assert doubly_stochastic(uniform, torch.ones(1, 4)).item() == 0.0
    ent = attention_entropy(alphas, torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.allclose(ent, torch.tensor([2 * 0.5 * torch.log(torch.tensor(2.0))]))


def test_masked_nll_is_the_cross_entropy_of_real_words_and_ignores_padding():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[3, 2, 0], [4, 4, 2]])
    mask = (targets != 0).float()
    by_hand = torch.stack([
        -(torch.log_softmax(logits[0, 0], 0)[3] + torch.log_softmax(logits[0, 1], 0)[2]),
        -sum(torch.log_softmax(logits[1, t], 0)[targets[1, t]] for t in range(3)),
    ])
    assert torch.allclose(sequence_nll(logits, targets, mask), by_hand)
    changed = logits.clone()
    changed[0, 2] = 100 * torch.randn(5)  # scores at a padded step do not matter
    assert torch.allclose(sequence_nll(changed, targets, mask), by_hand)


def test_task_loss_of_a_padded_batch_is_the_mean_of_each_caption_alone():
    model = models.get("sat", vocab=VOCAB.to_json(), encoder_widths=[8, 16], embed_dim=16, hidden_dim=24,
                       attn_dim=12, dropout=0.0).eval()  # eval: BatchNorm does not mix images
    task = Captioning(TrainConfig(model="sat", data="scenes"))
    ds = DigitScenes("train", 3, size=48, digit_size=(10, 14), gap=2)
    task.model_kwargs(ds)
    samples = [ds[i] for i in range(3)]
    batch = collate_captions(samples, VOCAB, reference=2)  # references of different lengths
    assert len(set(batch.lengths.tolist())) > 1
    loss, stats = task.loss(model, batch, torch.device("cpu"))
    alone = [task.loss(model, collate_captions([s], VOCAB, reference=2), torch.device("cpu"))[0] for s in samples]
    assert torch.allclose(loss, torch.stack(alone).mean(), atol=1e-5)
    assert stats["count"] == 3 and stats["tokens"] == float((batch.lengths - 1).sum())
    with pytest.raises(InputError, match="no task option"):
        Captioning(TrainConfig(model="sat", data="scenes", task_cfg={"lambda": 1}))


def _toy(expectation_prob=0.0):
    """A hard-attention SAT on one 4×4 image: 2×2 = 4 locations, a two-step caption, 16 location paths."""
    torch.manual_seed(3)
    model = models.get("sat", vocab=VOCAB.to_json(), attention="hard", encoder_widths=[4, 6], embed_dim=6,
                       hidden_dim=8, attn_dim=5, dropout=0.0, expectation_prob=expectation_prob).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    image = torch.rand(1, 3, 4, 4)
    caption = torch.tensor([[VOCAB.start_id, VOCAB.index("red"), VOCAB.end_id]])
    return model, image, caption


def _grad(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads, strict=True)])


def _exact_grad(model, image, caption, soft_weight=0.0):
    """∇ of −[(1 − w) Σ_s p(s|a) log p(y|s, a) + w log p(y|E[α])], enumerating the 16 location paths."""
    paths = torch.cartesian_prod(torch.arange(4), torch.arange(4))  # (16, 2)
    out = model(image.expand(16, -1, -1, -1), caption.expand(16, -1), locations=paths)
    mask = torch.ones(16, 2)
    log_lik = -sequence_nll(out.logits, caption[:, 1:].expand(16, -1), mask)  # (16,)
    l_s = (out.log_q.sum(1).exp() * log_lik).sum()
    soft = model(image, caption, sample=False)
    l_soft = -sequence_nll(soft.logits, caption[:, 1:], torch.ones(1, 2)).sum()
    return _grad(model, -((1 - soft_weight) * l_s + soft_weight * l_soft))


def _estimates(model, image, caption, baseline, reinforce=True, chunks=24, n=400):
    """Chunk means of the REINFORCE estimator (eq. 12 of the paper) with a fixed baseline."""
    means = []
    for _ in range(chunks):
        out = model(image.expand(n, -1, -1, -1), caption.expand(n, -1), sample=True)
        mask = torch.ones(n, 2)
        nll = sequence_nll(out.logits, caption[:, 1:].expand(n, -1), mask)
        loss = nll
        if reinforce:
            loss = loss + reinforce_term(-nll.detach(), baseline, out.log_q, mask, out.sampled)
        means.append(_grad(model, loss.mean()))
    est = torch.stack(means)  # (chunks, P)
    return est.mean(0), est.std(0) / chunks**0.5


@pytest.mark.parametrize("expectation_prob", [0.0, 0.5])
def test_hard_attention_gradient_estimator_is_unbiased_and_the_score_term_is_needed(expectation_prob):
    model, image, caption = _toy(expectation_prob)
    torch.manual_seed(0)
    exact = _exact_grad(model, image, caption, soft_weight=expectation_prob)
    mean, se = _estimates(model, image, caption, baseline=-2.0)  # any baseline keeps it unbiased
    z = (mean - exact).abs() / (se + 1e-6)
    assert z.max() < 5.0, f"largest deviation {z.max():.2f} standard errors"
    assert (mean - exact).norm() < 0.05 * exact.norm()
    biased, bse = _estimates(model, image, caption, baseline=0.0, reinforce=False)
    assert ((biased - exact).abs() / (bse + 1e-6)).max() > 10.0  # without the score-function term it is off


def test_fit_on_scenes_writes_caption_metrics_and_a_checkpoint_with_the_vocabulary(tmp_path):
    cfg = TrainConfig(model="sat", data="scenes", out=str(tmp_path / "run"), n=48, n_test=16, epochs=1,
                      batch_size=16, quiet=True, data_cfg={"size": 48, "digit_size": [10, 14], "gap": 2},
                      model_cfg={"attention": "hard", "encoder_widths": [8, 16], "hidden_dim": 32, "attn_dim": 16,
                                 "embed_dim": 16, "max_len": 12},
                      task_cfg={"beam_size": 2})
    run = fit(cfg)
    record = run.history[-1]
    for key in ("test_nll", "test_bleu1", "test_bleu4", "test_grounding", "test_grounding_ref", "train_sampled"):
        assert key in record
    assert 0 < record["train_sampled"] < 1  # about half the captions sampled their locations
    assert bool(run.model.baseline_ready) and float(run.model.baseline) < 0  # a log-likelihood average
    from attnscope.models import checkpoint

    loaded, _ = checkpoint.load(tmp_path / "run")
    assert loaded.vocab == VOCAB and loaded.config.attention == "hard"
    other = Vocabulary(list(reversed(VOCAB.words))).to_json()
    with pytest.raises(InputError, match="vocabulary differs from the data's"):
        fit(TrainConfig(**{**cfg.to_dict(), "out": str(tmp_path / "other"), "model_cfg": {**cfg.model_cfg,
                                                                                          "vocab": other}}))


def test_an_encoder_at_lr_scale_zero_stays_put_while_the_decoder_learns(tmp_path):
    cfg = TrainConfig(model="sat", data="scenes", out=str(tmp_path / "run"), n=32, n_test=8, epochs=1,
                      batch_size=16, schedule="constant", quiet=True,  # one-cycle ends at lr 0
                      data_cfg={"size": 48, "digit_size": [10, 14], "gap": 2},
                      model_cfg={"encoder_widths": [8, 16], "hidden_dim": 16, "attn_dim": 8, "embed_dim": 8,
                                 "max_len": 4, "encoder_lr_scale": 0.0})
    torch.manual_seed(cfg.seed)  # fit builds the model right after seeding with the run's seed
    start = models.get("sat", vocab=VOCAB.to_json(), **cfg.model_cfg)
    run = fit(cfg)
    assert run.history[-1]["lr"] > 0
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert same(run.model.encoder, start.encoder) and not same(run.model.decoder, start.decoder)
