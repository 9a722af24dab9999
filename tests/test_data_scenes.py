"""DigitScenes: captions true of the geometry, words grounded in the right boxes, and the vocabulary."""

import functools
import json
import re

import pytest
import torch
from torch.utils.data import DataLoader

from attnscope.data import DigitScenes, Vocabulary, collate_captions, tokenize
from attnscope.data.digits import (
    COLOURS,
    INK_THRESHOLD,
    NUMBER_WORDS,
    _load,
    ink_box,
    render_digit,
    split_indices,
)
from attnscope.data.scenes import relation
from attnscope.data.vocab import detokenize, pad_ids
from attnscope.errors import DataError, InputError

N = 60
NP = rf"a ({'|'.join(COLOURS)}) ({'|'.join(NUMBER_WORDS)})"
RELATION = re.compile(rf"^{NP}(?: is)? (left of|to the left of|right of|to the right of|above|below) {NP}$")


@pytest.fixture(scope="module")
def scenes() -> list:
    ds = DigitScenes("train", N, seed=0)
    return [ds[i] for i in range(N)]


def _same(a, b) -> bool:
    return torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks) and a[1:5] == b[1:5]


def test_same_seed_same_scenes_in_any_order_other_seed_or_split_differs():
    a, b = DigitScenes("train", 10, seed=5), DigitScenes("train", 10, seed=5)
    assert all(_same(a[i], b[i]) for i in reversed(range(10)))
    for other in (DigitScenes("train", 10, seed=6), DigitScenes("test", 10, seed=5)):
        assert sum(not torch.equal(a[i].image, other[i].image) for i in range(10)) == 10


@pytest.mark.parametrize("split", ["train", "test"])
def test_scenes_draw_only_their_split_and_each_mask_is_its_digit(split):
    ds = DigitScenes(split, 30, seed=1)
    images, labels = _load()
    members = set(split_indices()[split].tolist())
    for i in range(len(ds)):
        s, sources = ds[i], ds.source_indices(i)
        for obj, mask, src in zip(s.objects, s.masks, sources, strict=True):
            assert src in members and labels[src] == obj.digit
            x0, y0, x1, y1 = obj.box
            tiles = (render_digit(images[src], d) > INK_THRESHOLD for d in range(22, 35))
            crops = (t[b[1] : b[3], b[0] : b[2]] for t in tiles for b in [ink_box(t)])
            assert any(torch.equal(c, mask[y0:y1, x0:x1]) for c in crops)


def test_objects_are_distinct_apart_tight_and_drawn_in_their_named_colour(scenes):
    names, table = list(COLOURS), torch.tensor(list(COLOURS.values()))  # (6, 3)
    for s in scenes:
        assert 2 <= len(s.objects) <= 3 and s.masks.shape == (len(s.objects), 96, 96)
        assert len({(o.colour, o.digit) for o in s.objects}) == len(s.objects)  # every noun phrase is unique
        covered = torch.zeros(96, 96, dtype=torch.bool)
        for k, (obj, mask) in enumerate(zip(s.objects, s.masks, strict=True)):
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96 and y1 - y0 <= 34
            assert ink_box(mask) == obj.box  # all ink inside the box, and the box touches it on all sides
            covered[y0:y1, x0:x1] = True
            for other in s.objects[k + 1 :]:  # at least `gap` = 4 px apart on some axis
                a, b = obj.box, other.box
                assert a[2] + 4 <= b[0] or b[2] + 4 <= a[0] or a[3] + 4 <= b[1] or b[3] + 4 <= a[1]
            mean = s.image[:, mask].mean(dim=1)  # (3,) colour of the ink
            scale = (mean @ table.T) / (table * table).sum(1)  # best brightness per named colour
            error = ((scale[:, None] * table - mean) ** 2).sum(1)
            assert names[int(error.argmin())] == obj.colour
        assert s.image[:, ~covered].max() <= 0.05 + 1e-6  # nothing but noise outside the boxes


def _object(s, colour: str, number: str):
    [obj] = [o for o in s.objects if (o.colour, NUMBER_WORDS[o.digit]) == (colour, number)]
    return obj


def _holds(rel: str, a, b) -> bool:
    """Whether box a is `rel` box b: separated on that axis, and that axis dominates the centre shift."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    return {
        "left": a[2] <= b[0] and abs(dx) > abs(dy),
        "right": b[2] <= a[0] and abs(dx) > abs(dy),
        "above": a[3] <= b[1] and abs(dy) > abs(dx),
        "below": b[3] <= a[1] and abs(dy) > abs(dx),
    }[rel]


def test_every_reference_caption_parses_and_is_true_of_the_boxes(scenes):
    seen = set()
    for s in scenes:
        assert len(s.captions) == 5 and len(set(s.captions)) == 5
        for n, caption in enumerate(s.captions):
            m = RELATION.match(caption)
            if m:
                c1, d1, phrase, c2, d2 = m.groups()
                rel = phrase.split()[-2] if phrase.endswith(" of") else phrase
                a, b = _object(s, c1, d1), _object(s, c2, d2)
                assert a != b and _holds(rel, a.box, b.box), (caption, s.objects)
                seen.add(phrase + (" is" if " is " in caption else ""))
                if n == 0:
                    first = (a, b)
                if n == 1:
                    assert (b, a) == first  # the second caption says the first from the other object
            else:
                parts = re.split(r", | and ", caption)
                assert all(re.fullmatch(NP, p) for p in parts), caption
                named = [_object(s, *re.fullmatch(NP, p).groups()) for p in parts]
                assert len(set(named)) == len(named) >= 2
                assert n != 2 or len(named) == len(s.objects)  # the third lists every object
                seen.add(f"list of {len(named)}")
        assert RELATION.match(s.captions[0]) and " is " not in s.captions[0]
    kinds = {"left of", "right of", "to the left of", "to the right of", "above", "below"}
    assert kinds | {k + " is" for k in kinds} | {"list of 2", "list of 3"} == seen  # every form occurs


def test_each_word_names_the_box_of_its_object_and_function_words_none(scenes):
    for s in scenes:
        assert s.tokens == s.alignments[0] and len(s.alignments) == len(s.captions)
        for caption, tokens in zip(s.captions, s.alignments, strict=True):
            assert [t.word for t in tokens] == tokenize(caption)
            for p, t in enumerate(tokens):
                if t.word in COLOURS:
                    obj = _object(s, t.word, tokens[p + 1].word)
                elif t.word in NUMBER_WORDS:
                    obj = _object(s, tokens[p - 1].word, t.word)
                else:
                    assert t.box is None and t.object is None
                    continue
                assert t.box == obj.box and s.objects[t.object] == obj


def test_scene_vocabulary_is_fixed_shared_and_covers_every_caption(scenes):
    vocab = DigitScenes.vocabulary()
    assert vocab == DigitScenes("test", 3, seed=9).vocabulary() == Vocabulary.from_json(vocab.to_json())
    assert len(vocab) == 31  # ids are what checkpoints store: pin them
    assert vocab.itos[:8] == ["<pad>", "<start>", "<end>", "<unk>", "a", "is", "and", ","]
    for s in scenes:
        for caption in s.captions:
            ids = vocab.encode(caption)
            assert vocab.unk_id not in ids and ids[0] == vocab.start_id and ids[-1] == vocab.end_id
            assert vocab.decode(ids) == caption


def test_vocabulary_tokenizes_encodes_decodes_and_rejects_bad_descriptions():
    words = ["a", "red", "3", ",", "left", "-", "of", "the", "blue", "seven", "."]
    assert tokenize("A Red 3, left-of the  BLUE seven.") == words
    assert detokenize(["a", "dog", ",", "a", "cat", "."]) == "a dog, a cat."
    vocab = Vocabulary.from_captions(["a dog runs", "a dog sits", "a cat"], min_count=2)
    assert vocab.words == ["a", "dog"]  # most frequent first; words seen once are left out
    assert vocab.encode("A dog flies") == [1, 4, 5, 3, 2]  # <start> a dog <unk> <end>
    assert vocab.decode([1, 4, 5, 3, 2, 4, 0]) == "a dog <unk>"  # stops at <end>
    assert vocab.decode(torch.tensor([4, 0, 5])) == "a dog"  # <pad> dropped
    assert Vocabulary.from_captions([["b", "a"], ["a"]]).words == ["a", "b"]
    assert Vocabulary.from_json(json.dumps(vocab.to_json())) == vocab
    with pytest.raises(InputError, match="outside"):
        vocab.decode([99])
    with pytest.raises(InputError, match="min_count"):
        Vocabulary.from_captions(["a"], min_count=0)
    for bad in ("{not json", {"words": ["a"]}, {"specials": ["<unk>"], "words": []},
                {"specials": ["<pad>", "<start>", "<end>", "<unk>"], "words": ["a", "a"]}):
        with pytest.raises(DataError):
            Vocabulary.from_json(bad)


def test_collate_pads_captions_and_keeps_every_reference(scenes):
    vocab = DigitScenes.vocabulary()
    batch = collate_captions(scenes[:4], vocab)
    assert torch.equal(batch.images, torch.stack([s.image for s in scenes[:4]]))
    assert batch.lengths.tolist() == [len(vocab.encode(s.captions[0])) for s in scenes[:4]]
    assert batch.captions.shape == (4, int(batch.lengths.max()))
    for row, n, s in zip(batch.captions, batch.lengths, scenes[:4], strict=True):
        assert row[:n].tolist() == vocab.encode(s.captions[0]) and (row[n:] == vocab.pad_id).all()
    assert batch.references == [s.captions for s in scenes[:4]]
    torch.manual_seed(0)
    drawn = collate_captions(scenes[:8], vocab, reference=None)
    torch.manual_seed(0)
    assert torch.equal(drawn.captions, collate_captions(scenes[:8], vocab, reference=None).captions)
    assert all(vocab.decode(r) in s.captions for r, s in zip(drawn.captions, scenes[:8], strict=True))
    assert any(vocab.decode(r) != s.captions[0] for r, s in zip(drawn.captions, scenes[:8], strict=True))
    collate = functools.partial(collate_captions, vocab=vocab)
    loader = DataLoader(DigitScenes("train", 6, seed=0), batch_size=3, collate_fn=collate)
    assert [b.images.shape[0] for b in loader] == [3, 3]
    assert pad_ids([[5], [6, 7, 8]])[0].tolist() == [[5, 0, 0], [6, 7, 8]]
    with pytest.raises(InputError, match="reference"):
        collate_captions(scenes[:2], vocab, reference=5)


def test_distractors_change_only_pixels_outside_every_object_and_no_caption_names_them():
    cfg = dict(size=64, digit_size=(12, 16), n_objects=(4, 6), gap=2, noise=0.0)
    plain, busy = DigitScenes("train", 12, **cfg), DigitScenes("train", 12, distractors=8, **cfg)
    changed_somewhere = 0
    for i in range(12):
        a, b = plain[i], busy[i]
        assert a.captions == b.captions and a.objects == b.objects and torch.equal(a.masks, b.masks)
        assert 4 <= len(a.objects) <= 6
        inside = torch.zeros(64, 64, dtype=torch.bool)
        for x0, y0, x1, y1 in (o.box for o in a.objects):
            inside[y0:y1, x0:x1] = True
        diff = (a.image != b.image).any(0)  # (H, W)
        assert not diff[inside].any()
        changed_somewhere += int(diff.sum() > 0)
        for j, k in ((j, k) for j in range(len(a.objects)) for k in range(len(a.objects)) if j != k):
            assert relation(a.objects[j].box, a.objects[k].box) is not None  # every pair can be captioned
    assert changed_somewhere == 12


def test_bad_options_raise_typed_errors():
    for kwargs in ({"n_objects": (1, 2)}, {"n_objects": (2, 7)}, {"n_captions": 7}, {"digit_size": (22, 60)},
                   {"n": 0}, {"gap": -1}, {"distractors": -1}, {"fragment_size": 40}):
        with pytest.raises(InputError):
            DigitScenes("train", **{"n": 5, **kwargs})
    with pytest.raises(InputError, match="split"):
        DigitScenes("val", 5)
    with pytest.raises(InputError, match="could not place"):
        DigitScenes("train", 2, size=40, n_objects=(4, 4), digit_size=(20, 20))[0]
    with pytest.raises(IndexError):
        DigitScenes("train", 2)[2]
