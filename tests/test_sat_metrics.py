"""Caption metrics: corpus BLEU by hand and against NLTK; words grounded in their objects' boxes."""

import math
import random

import pytest
import torch
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

from attnscope.metrics.captions import corpus_bleu, grounding, object_word_boxes
from attnscope.train.caption_eval import CaptionScores, word_grounding


def test_bleu_by_hand_clipping_brevity_penalty_and_closest_reference():
    # Papineni et al.'s example of clipping: "the" ×7 against references with at most two "the".
    hyp = ["the"] * 7
    refs = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]
    assert corpus_bleu([hyp], [refs], max_n=1) == pytest.approx([2 / 7])
    # A 4-word hypothesis, references of 3 and 5 words (both 1 away): the shorter one counts, so no penalty.
    hyp = ["a", "red", "three", "below"]
    refs = [["a", "red", "three"], ["a", "red", "three", "is", "below"]]
    b = corpus_bleu([hyp], [refs])
    assert b[0] == pytest.approx(1.0) and b[1] == pytest.approx(math.sqrt(1.0 * 2 / 3))
    assert b[2] == pytest.approx((1.0 * 2 / 3 * 1 / 2) ** (1 / 3)) and b[3] == 0.0  # no 4-gram matches
    # Too short: c = 2 against r = 3 → BP = exp(1 − 3/2).
    assert corpus_bleu([["a", "red"]], [[["a", "red", "three"]]], max_n=2) == pytest.approx([math.exp(-0.5)] * 2)
    assert corpus_bleu([["blue"]], [[["a", "red", "three"]]]) == [0.0] * 4
    with pytest.raises(ValueError):
        corpus_bleu([["a"]], [])


@pytest.mark.filterwarnings("ignore:\\s*The hypothesis contains 0 counts")
def test_corpus_bleu_agrees_with_nltk_on_random_corpora():
    rng = random.Random(0)
    words = "a red three left".split()
    nonzero = 0
    for _ in range(20):
        hyps, refs = [], []
        for _ in range(rng.randint(1, 30)):
            # at least 4 tokens: for shorter ones NLTK counts 1 missing n-gram where Papineni counts none
            hyps.append([rng.choice(words) for _ in range(rng.randint(4, 14))])
            refs.append([[rng.choice(words) for _ in range(rng.randint(3, 14))] for _ in range(rng.randint(1, 5))])
        ours = corpus_bleu(hyps, refs)
        theirs = nltk_corpus_bleu(refs, hyps, weights=[(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4])
        assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) <= 1e-9
        nonzero += ours[3] > 0.05
    assert nonzero >= 15  # the comparison is not between zeros


def test_object_words_are_grounded_in_the_box_of_the_phrase_that_names_them():
    objects = [(("red", "three"), (0, 0, 10, 10)), (("blue", "seven"), (20, 20, 30, 30))]
    words = "a red three left of a blue two".split()
    boxes = object_word_boxes(words, objects, {"red", "blue", "three", "seven", "two"})
    assert boxes == [None, (0, 0, 10, 10), (0, 0, 10, 10), None, None, None, False, False]


def test_grounding_hits_and_mass_on_hand_made_maps():
    maps = torch.zeros(2, 8, 8)
    maps[0, 1, 1], maps[0, 6, 6] = 3.0, 1.0  # peak in the box, a quarter of the mass outside
    maps[1, 6, 6], maps[1, 1, 1] = 3.0, 1.0
    hits, mass = grounding(maps, torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4]]))
    assert hits.tolist() == [1.0, 0.0] and mass.tolist() == [0.75, 0.25]


def test_caption_scores_count_words_that_name_objects_and_those_that_name_none():
    class Obj:
        def __init__(self, colour, digit, box):
            self.colour, self.digit, self.box = colour, digit, box

    class Sample:
        image = torch.zeros(3, 8, 8)
        captions = ["a red three"]
        objects = [Obj("red", 3, (0, 0, 4, 4))]
        alignments = [[]]

    alphas = torch.zeros(1, 4, 2, 2)
    alphas[0, 0, 1, 1] = 1.0  # "a": nowhere in particular
    alphas[0, 1, 0, 0] = 1.0  # "red": top-left cell, inside the box
    alphas[0, 2, 1, 1] = 1.0  # "three": bottom-right cell, outside
    alphas[0, 3, 0, 0] = 1.0  # "blue": names no object of the scene
    scores = CaptionScores()
    scores.add([["a", "red", "three", "blue"]], alphas, [Sample()])
    result = scores.result()
    assert result["grounding"] == 0.5 and result["hallucinated"] == pytest.approx(1 / 3)
    assert result["grounding_strict"] == pytest.approx(1 / 3) and result["bleu1"] == pytest.approx(0.75)
    hits, mass = word_grounding(alphas[0, 1:2], [(0, 0, 4, 4)], (8, 8))
    assert hits.tolist() == [1.0] and 0.5 < mass.item() < 1.0  # bilinear resizing spreads a little mass
