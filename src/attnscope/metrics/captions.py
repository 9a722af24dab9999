"""Caption metrics: corpus BLEU with several references, and the grounding of words' attention.

Pure functions over token lists and (N, H, W) maps. Tokens are whatever the caller tokenised;
attnscope uses `attnscope.data.tokenize` (lower-case words and single punctuation marks) for
both hypotheses and references.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from attnscope.metrics.checks import takes_maps
from attnscope.metrics.localisation import energy_in_box, pointing_game

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of the n-grams of `tokens`."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(
    hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], max_n: int = 4
) -> list[float]:
    """Corpus BLEU-1..`max_n` (Papineni et al., ACL 2002), cumulative as in the captioning literature.

    BLEU-n = BP · exp((1/n) Σ_{k≤n} log p_k), with p_k = Σ clipped k-gram matches / Σ hypothesis
    k-grams over the corpus (a k-gram's count clipped by its largest count in any one reference),
    and BP = min(1, exp(1 − r/c)), c the total hypothesis length and r the total length of the
    reference closest in length to each hypothesis (the shorter one on a tie). No smoothing: a
    zero p_k makes BLEU-n (n ≥ k) zero. Agrees with NLTK's `corpus_bleu`.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        for n in range(1, max_n + 1):
            counts = ngrams(hyp, n)
            most: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                most |= ngrams(ref, n)  # element-wise max over references
            matches[n - 1] += sum(min(c, most[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    if hyp_len == 0:
        return [0.0] * max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    scores, log_sum = [], 0.0
    for n in range(max_n):
        if matches[n] == 0 or log_sum == -math.inf:
            log_sum = -math.inf
            scores.append(0.0)
            continue
        log_sum += math.log(matches[n] / totals[n])
        scores.append(bp * math.exp(log_sum / (n + 1)))
    return scores


def object_word_boxes(
    tokens: Sequence[str], objects: Sequence[tuple[Sequence[str], Box]], object_words: set[str]
) -> list[Box | None | bool]:
    """For each token: the box of the object its phrase names, None for a word that names nothing,
    or False for an object word (in `object_words`) that names no object of the image.

    An object is named by its phrase (e.g. ("red", "three")) appearing as consecutive tokens; every
    word of the phrase is grounded in that object's box.
    """
    out: list[Box | None | bool] = [False if w in object_words else None for w in tokens]
    for phrase, box in objects:
        n = len(phrase)
        for i in range(len(tokens) - n + 1):
            if tuple(tokens[i : i + n]) == tuple(phrase):
                out[i : i + n] = [box] * n
    return out


@takes_maps
def grounding(maps: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per word map (N, H, W) and its object's box (N, 4): (argmax inside the box, share of the mass in it).

    The first is the pointing game (Zhang et al., ECCV 2016), the second the energy in the box;
    attention maps are non-negative, so the energy is the share of α inside the box. Both (N,) float.
    """
    if maps.shape[0] == 0:
        return torch.zeros(0), torch.zeros(0)
    return pointing_game(maps, boxes), energy_in_box(maps, boxes)
