"""The "captioning" task: Show, Attend and Tell's objective (Xu et al., ICML 2015) and caption metrics.

Soft attention minimises −log p(y|a) + λ Σ_i (1 − Σ_t α_ti)² (Sec. 4.2.1, the doubly stochastic
term, here summed over real words only). Hard attention follows the learning rule of Sec. 4.1
(eq. 12): for a sampled location sequence s̃ the gradient is
    ∂ log p(y|s̃, a)/∂W + λ_r (log p(y|s̃, a) − b) ∂ log p(s̃|a)/∂W + λ_e ∂H[s̃]/∂W,
an unbiased estimate of the gradient of L_s = Σ_s p(s|a) log p(y|s, a) for any baseline b, with
b the moving average b ← 0.9 b + 0.1 log p(y|s̃, a) ("baseline_time" in arctic-captions; here
started at the first batch's mean instead of 0). Captions that the model ran on the expectation
(probability `expectation_prob`) take the soft gradient. Losses are summed over a caption's
words and averaged over captions, as arctic-captions does.

Options (`--task-opt`): doubly_stochastic (λ, 1.0), reinforce (λ_r, 1.0), entropy (λ_e, 0.01),
baseline_decay (0.9), beam_size for evaluation (1: greedy), eval_n (test images scored, all).

Not in the paper: `--guide sat` (TrainConfig.guide = "sat", weight `guide_weight`, default 1) adds
λ_a Σ_t −Σ_i β_ti log α_ti, Liu et al.'s supervised attention (AAAI 2017; `attnscope.guide.captions`),
on data whose words come with boxes (DigitScenes).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from attnscope.data.vocab import CaptionBatch, Vocabulary, collate_captions
from attnscope.errors import InputError
from attnscope.guide import GUIDES
from attnscope.guide.captions import attention_supervision, box_attention
from attnscope.modules import unwrap
from attnscope.train.caption_eval import CaptionScores, add_generated
from attnscope.train.config import TrainConfig
from attnscope.train.tasks import TASKS

DEFAULTS: dict[str, Any] = {"doubly_stochastic": 1.0, "reinforce": 1.0, "entropy": 0.01, "baseline_decay": 0.9,
                            "beam_size": 1, "eval_n": None}


def sequence_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−log p(y|a) of each caption (B,): token cross-entropies (B, T) summed where `mask` (B, T) is set."""
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    return (ce * mask).sum(dim=1)


def doubly_stochastic(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_i (1 − Σ_t α_ti)² per caption (B,), the sum over t running over real steps only (Xu et al., eq. 14)."""
    total = (alphas * mask[..., None]).sum(dim=1)  # (B, L)
    return ((1.0 - total) ** 2).sum(dim=1)


def attention_entropy(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """H[α] = −Σ_t Σ_i α_ti log α_ti over real steps, per caption (B,)."""
    h = -(alphas * alphas.clamp_min(torch.finfo(alphas.dtype).tiny).log()).sum(dim=2)  # (B, T)
    return (h * mask).sum(dim=1)


def reinforce_term(reward: torch.Tensor, baseline: torch.Tensor | float, log_q: torch.Tensor, mask: torch.Tensor,
                   sampled: torch.Tensor) -> torch.Tensor:
    """Surrogate (B,) whose gradient is −(R − b) ∂ log p(s̃|a)/∂W for sampled captions, 0 for the others."""
    advantage = (reward - baseline).detach() * sampled  # (B,)
    return -advantage * (log_q * mask).sum(dim=1)


def _attention_weight(config: TrainConfig) -> float:
    """λ_a of the supervised-attention term: the config's guide must be "sat" (or none: 0)."""
    if config.guide is None:
        return 0.0
    if config.guide != "sat" or config.guide_region != "box":
        raise InputError(f"captioning takes only --guide sat with the word boxes (--guide-region box), got guide "
                         f"{config.guide!r}, region {config.guide_region!r}")
    return GUIDES.get("sat").weight if config.guide_weight is None else float(config.guide_weight)


@TASKS.register("captioning")
class Captioning:
    """Teacher-forced Show, Attend and Tell on a captioning data set; BLEU and grounding on the test set."""

    def __init__(self, config: TrainConfig) -> None:
        unknown = set(config.task_cfg) - set(DEFAULTS)
        if unknown:
            raise InputError(f"captioning has no task option {sorted(unknown)}; it takes {sorted(DEFAULTS)}")
        self.opts = {**DEFAULTS, **config.task_cfg}
        if not 0.0 <= float(self.opts["baseline_decay"]) < 1.0:
            raise InputError(f"baseline_decay must be in [0, 1), got {self.opts['baseline_decay']}")
        self.vocab: Vocabulary | None = None
        self._checked = False
        self.attention_weight = _attention_weight(config)

    def check(self, dataset: Dataset) -> None:
        """Fail before the run is written if supervised attention is asked for on data without word boxes."""
        if self.attention_weight and len(dataset) and getattr(dataset[0], "alignments", None) is None:
            raise InputError("guide 'sat' needs captions whose words come with boxes (e.g. --data scenes); "
                             "this data set has none")

    def model_kwargs(self, dataset: Dataset) -> dict[str, Any]:
        self.vocab = dataset.vocabulary()
        return {"vocab": self.vocab.to_json()}

    def collate(self, samples: list[Any]) -> CaptionBatch:
        """One reference per image, drawn afresh each time (torch's generator, seeded per epoch)."""
        return collate_captions(samples, self.vocab, reference=None)

    def loss(self, model: nn.Module, batch: CaptionBatch, device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        core = unwrap(model)
        self._check(core)
        captions = batch.captions.to(device)  # (B, T+1)
        out = model(batch.images.to(device), captions)
        targets = captions[:, 1:]  # (B, T)
        mask = (targets != self.vocab.pad_id).float()
        nll = sequence_nll(out.logits, targets, mask)  # (B,)
        ds = doubly_stochastic(out.alphas, mask)
        loss = nll + float(self.opts["doubly_stochastic"]) * ds
        stats = {"count": len(nll), "nll": float(nll.detach().sum()), "tokens": float(mask.sum()),
                 "ds": float(ds.detach().sum())}
        if core.config.attention == "hard":
            reward = -nll.detach()  # log p(y|s̃, a)
            baseline = self._baseline(core, reward, out.sampled)
            loss = loss + float(self.opts["reinforce"]) * reinforce_term(reward, baseline, out.log_q, mask, out.sampled)
            loss = loss - float(self.opts["entropy"]) * attention_entropy(out.alphas, mask)
            stats["sampled"] = float(out.sampled.sum())
        if self.attention_weight:
            beta, has = box_attention(batch.boxes.to(device), out.grid, tuple(batch.images.shape[-2:]))
            supervised = attention_supervision(out.alphas, beta, has)  # (B,)
            loss = loss + self.attention_weight * supervised
            stats["guide"] = float(supervised.detach().sum())
        return loss.mean(), stats

    def _baseline(self, core: nn.Module, reward: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        """The baseline for this batch; then the moving average takes in this batch's sampled rewards."""
        b = core.baseline.clone()
        if bool(sampled.any()):
            mean = reward[sampled].mean()
            if not bool(core.baseline_ready):
                b = mean.detach().clone()
                core.baseline_ready.fill_(True)
            decay = float(self.opts["baseline_decay"])
            core.baseline.copy_(decay * b + (1 - decay) * mean)
        return b

    def _check(self, core: nn.Module) -> None:
        if self._checked:
            return
        if getattr(core, "vocab", None) != self.vocab:
            raise InputError("the model's vocabulary differs from the data's; leave vocab out of --model-opt")
        self._checked = True

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int) -> dict[str, float]:
        """Per-word NLL (teacher-forced on the first reference), BLEU-1..4 and grounding of generated captions
        (the same scoring as `attnscope caption`: `caption_eval.add_generated`)."""
        n = len(dataset) if self.opts["eval_n"] is None else min(int(self.opts["eval_n"]), len(dataset))
        scores = CaptionScores()
        nll_sum, tokens = 0.0, 0.0
        collate = functools.partial(collate_captions, vocab=model.vocab, reference=0)
        for start in range(0, n, max(batch_size, 64)):
            samples = [dataset[i] for i in range(start, min(n, start + max(batch_size, 64)))]
            batch = collate(samples)
            images, captions = batch.images.to(device), batch.captions.to(device)
            out = model(images, captions)
            mask = (captions[:, 1:] != model.vocab.pad_id).float()
            nll_sum += float(sequence_nll(out.logits, captions[:, 1:], mask).sum())
            tokens += float(mask.sum())
            add_generated(scores, model, images, samples, beam_size=int(self.opts["beam_size"]))
        return {"nll": nll_sum / tokens, **scores.result()}
