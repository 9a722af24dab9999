"""Greedy and beam search: beam 1 == greedy, the best sequence by brute force, no <end> reached, batching."""

import itertools
import math

import pytest
import torch

from attnscope import models
from attnscope.data import DigitScenes
from attnscope.models.sat_search import beam_search, greedy

PAD, START, END = 0, 1, 2
IDS = dict(start_id=START, end_id=END, pad_id=PAD)


def markov(tables: torch.Tensor):
    """A decoder whose next-word distribution depends on the image and the last word: tables (B, V, V) of probs."""
    logt = tables.clamp_min(0).log()

    def step(words, state):
        (image,) = state
        return logt[image, words], state, torch.stack([image.float(), words.float()], 1)

    return step


def run(tables, beam_size, max_len, length_norm=False):
    b = tables.shape[0]
    if beam_size == 1:
        return greedy(markov(tables), (torch.arange(b),), b, max_len=max_len, **IDS)
    state = (torch.arange(b).repeat_interleave(beam_size),)
    return beam_search(markov(tables), state, b, beam_size, max_len=max_len, length_norm=length_norm, **IDS)


def brute_force(table: torch.Tensor, max_len: int, length_norm: bool = False):
    """(best score, tokens) over every sequence of real words ending in <end> within max_len tokens."""
    v = table.shape[0]
    best = (-math.inf, None)
    for n in range(1, max_len + 1):
        for words in itertools.product(range(3, v), repeat=n - 1):
            seq, prev, score = [*words, END], START, 0.0
            for w in seq:
                score += math.log(max(float(table[prev, w]), 1e-300))
                prev = w
            key = score / n if length_norm else score
            if key > best[0] + 1e-9:
                best = (key, seq)
    return best


def hand_table() -> torch.Tensor:
    """start → A 0.6 | B 0.4; A → A 0.4, B 0.3, end 0.3; B → end 0.95. Greedy takes A; the best is "B <end>"."""
    t = torch.zeros(5, 5)
    t[START, 3], t[START, 4] = 0.6, 0.4
    t[3, 3], t[3, 4], t[3, END] = 0.4, 0.3, 0.3
    t[4, END], t[4, 3] = 0.95, 0.05
    return t


def test_beam_search_finds_the_best_sequence_where_greedy_does_not():
    tables = torch.stack([hand_table(), hand_table()])
    tables[1, START] = torch.tensor([0, 0, 0, 0.1, 0.9])  # second image: greedy is already right
    best, seq = brute_force(tables[0], max_len=4)
    assert seq == [4, END] and math.isclose(best, math.log(0.4 * 0.95), rel_tol=1e-6)
    g = run(tables, 1, max_len=4)
    assert g.tokens[0].tolist()[:2] == [3, 3]  # greedy follows A and misses the best caption
    found = run(tables, 2, max_len=4)
    assert found.tokens.tolist() == [[4, END], [4, END]] and found.finished.all()
    assert torch.allclose(found.scores, torch.tensor([math.log(0.38), math.log(0.9 * 0.95)]))
    assert found.extras[:, :, 0].tolist() == [[0, 0], [1, 1]]  # each image's own rows, in order


@pytest.mark.parametrize("length_norm", [False, True])
def test_a_wide_beam_returns_the_brute_force_optimum_on_random_decoders(length_norm):
    g = torch.Generator().manual_seed(0)
    tables = torch.rand(6, 6, 6, generator=g) ** 3  # peaked random distributions
    tables[:, :, [PAD, START]] = 0.0
    tables = tables / tables.sum(-1, keepdim=True)
    found = run(tables, beam_size=64, max_len=4, length_norm=length_norm)
    for i in range(6):
        best, seq = brute_force(tables[i], 4, length_norm)
        assert found.tokens[i].tolist()[: len(seq)] == seq and found.finished[i]
        assert set(found.tokens[i].tolist()[len(seq) :]) <= {PAD}
        key = found.scores[i] / len(seq) if length_norm else found.scores[i]
        assert math.isclose(float(key), best, rel_tol=1e-5)


def test_when_no_hypothesis_reaches_end_the_best_live_one_is_returned_unfinished():
    t = hand_table()
    t[:, END] = 0.0  # <end> impossible
    t[3] = torch.tensor([0, 0, 0, 0.5, 0.5])
    t[4] = torch.tensor([0, 0, 0, 0.9, 0.1])
    found = run(t[None], beam_size=3, max_len=3)
    assert not found.finished.any() and found.tokens.shape == (1, 3)
    # best of length 3: B A A = .4 * .9 * .5 = .18 beats A A A = .6 * .5 * .5 = .15 and A B A = .6 * .5 * .9 = .27
    assert found.tokens.tolist() == [[3, 4, 3]] and math.isclose(float(found.scores[0]), math.log(0.27), rel_tol=1e-6)


def test_beam_size_one_equals_greedy_on_the_sat_model():
    vocab = DigitScenes.vocabulary()
    model = models.get("sat", vocab=vocab.to_json(), encoder_widths=[8, 16], embed_dim=16, hidden_dim=32,
                       attn_dim=16, dropout=0.0, max_len=9).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # weights that give captions of different lengths, some unfinished
        for p in model.parameters():
            p.normal_(0, 0.6)
        model.decoder.out.bias[vocab.end_id] += 3.5
    images = torch.rand(6, 3, 24, 24)
    g, b1 = model.caption(images), model.caption(images, beam_size=1)
    b = model.caption(images, beam_size=3)
    assert 0 < int(g.finished.sum()) < 6  # both kinds present
    from attnscope.models.sat_search import beam_search as bs

    a, _ = model.encoder(images)
    keys = model.decoder.att_ctx(a)

    def step(words, state):
        logit, state, alpha, _, _ = model.decoder.step(words, state, a, keys)
        logit = logit.index_fill(1, torch.tensor([0, 1]), float("-inf"))
        logit[words == START, END] = float("-inf")
        return torch.log_softmax(logit, 1), state, alpha

    with torch.no_grad():
        one = bs(step, model.decoder.init_state(a), 6, 1, max_len=9, **IDS)
    assert torch.equal(one.tokens, g.tokens) and torch.allclose(one.scores, g.scores)
    assert torch.equal(one.finished, g.finished) and torch.allclose(one.extras.view_as(g.alphas), g.alphas)
    assert torch.equal(b1.tokens, g.tokens)
    assert (b.scores[b.finished & g.finished] >= g.scores[b.finished & g.finished] - 1e-5).all()
