"""Rollout, gradient-weighted rollout, attention flow and head fusion against hand-computed values."""

import networkx as nx
import pytest
import torch

from attnscope.errors import InputError
from attnscope.explain import transformer as tf


def t(rows, heads=1):
    """A (1, heads, T, T) attention tensor from rows (one head) or a list of per-head rows."""
    x = torch.tensor(rows, dtype=torch.float64)
    return x.expand(heads, *x.shape)[None].clone() if x.dim() == 2 else x[None]


def test_head_fusion_and_row_renormalisation_keep_the_row_axis():
    # Two heads of 2 tokens: max = [[1, 1], [1, 0]], min = [[0, 0], [1, 0]].
    a = t([[[1, 0], [1, 0]], [[0, 1], [1, 0]]])
    torch.testing.assert_close(tf.fuse_heads(a, "mean"), torch.tensor([[[0.5, 0.5], [1.0, 0.0]]], dtype=torch.float64))
    # (max + I) / 2 = [[1, .5], [.5, .5]]; rows sum to 1.5 and 1 → [[2/3, 1/3], [1/2, 1/2]]
    # (dividing by the row sums without keepdim would give [[2/3, 1/2], [1/3, 1/2]]).
    torch.testing.assert_close(tf.rollout([a], "max")[0], t([[2 / 3, 1 / 3], [0.5, 0.5]])[0, 0])
    torch.testing.assert_close(tf.rollout([a], "min")[0], t([[1.0, 0.0], [0.5, 0.5]])[0, 0])
    with pytest.raises(InputError, match="head_fusion"):
        tf.fuse_heads(a, "median")


def test_rollout_is_the_product_of_residual_attention_later_layers_on_the_left():
    a1 = t([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]], heads=2)  # Â1 = [[.75, .25, 0], [0, 1, 0], [0, 0, 1]]
    a2 = t([[0, 0, 1], [0, 1, 0], [0.5, 0, 0.5]], heads=2)  # Â2 = [[.5, 0, .5], [0, 1, 0], [.25, 0, .75]]
    # Â2 · Â1 by hand (Â1 · Â2 would give row 0 = [.375, .25, .375]).
    expected = torch.tensor([[0.375, 0.125, 0.5], [0, 1, 0], [0.1875, 0.0625, 0.75]], dtype=torch.float64)
    torch.testing.assert_close(tf.rollout([a1, a2])[0], expected)


def test_identity_and_uniform_attention_give_uniform_patch_relevance():
    eye = torch.eye(5).expand(3, 2, 5, 5)  # B=3, heads=2, T=5 (CLS + 2×2 patches)
    for joint in (tf.rollout([eye, eye, eye]), tf.grad_rollout([eye, eye], [torch.randn(3, 2, 5, 5)] * 2)):
        cls_row = joint[:, 0, 1:]  # (3, 4): CLS → patches
        assert torch.equal(cls_row, torch.zeros(3, 4))
    uniform = torch.full((2, 4, 5, 5), 0.2)
    cls_row = tf.rollout([uniform] * 3)[:, 0, 1:]
    torch.testing.assert_close(cls_row, cls_row[:, :1].expand(2, 4))
    assert float(cls_row[0, 0]) > 0


def test_discard_never_removes_the_cls_entry_and_drops_exactly_the_smallest():
    a = torch.tensor([[0.01, 0.5, 0.49], [0.2, 0.35, 0.45], [0.1, 0.6, 0.3]])[None]  # [0, 0] is the smallest
    # ⌊0.5 · 9⌋ = 4. spare-cls: the 4 smallest of the other 8 (.1, .2, .3, .35) are zeroed.
    spare = torch.tensor([[0.01, 0.5, 0.49], [0, 0, 0.45], [0, 0.6, 0]])[None]
    torch.testing.assert_close(tf.discard_lowest(a, ratio=0.5, rule="spare-cls"), spare)
    # reference (jacobgil/vit-explain): the 4 smallest of all 9 are .01, .1, .2, .3; [0, 0] is spared: 3 zeroed.
    reference = torch.tensor([[0.01, 0.5, 0.49], [0, 0.35, 0.45], [0, 0.6, 0]])[None]
    torch.testing.assert_close(tf.discard_lowest(a, ratio=0.5), reference)
    # Through rollout: Â = (discarded + I) / 2 with renormalised rows; row 0 keeps its CLS entry.
    row0 = (torch.tensor([0.01, 0.5, 0.49]) + torch.tensor([1.0, 0, 0])) / 2
    torch.testing.assert_close(tf.rollout([a[:, None]], discard_ratio=0.5)[0, 0], row0 / row0.sum())
    with pytest.raises(InputError, match="discard_ratio"):
        tf.discard_lowest(a, ratio=1.0)
    with pytest.raises(InputError, match="discard_rule"):
        tf.discard_lowest(a, ratio=0.5, rule="other")


def _reference_discard(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """An independent port of the reference rollout's discard step, for one image (1, T, T)."""
    fused = fused.clone()
    flat = fused.view(fused.size(0), -1)
    _, indices = flat.topk(int(flat.size(-1) * ratio), -1, False)
    indices = indices[indices != 0]
    flat[0, indices] = 0
    return fused


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_discard_reference_rule_equals_the_reference_code(ratio: float):
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        a = torch.rand(1, 7, 7, generator=g)
        a[0, 0, 0] = float(torch.rand(1, generator=g)) * 0.05  # often among the smallest
        torch.testing.assert_close(tf.discard_lowest(a, ratio), _reference_discard(a, ratio))


def test_discard_is_per_image_in_a_batch():
    a = torch.rand(4, 2, 5, 5).softmax(-1)
    batched = tf.rollout([a, a.flip(0)], "max", discard_ratio=0.6)
    single = torch.cat([tf.rollout([a[i : i + 1], a.flip(0)[i : i + 1]], "max", discard_ratio=0.6) for i in range(4)])
    torch.testing.assert_close(batched, single)


def test_grad_rollout_by_hand():
    a1 = t([[[0.6, 0.4], [0.2, 0.8]], [[0.5, 0.5], [0.5, 0.5]]])
    g1 = t([[[1, -1], [2, 0.5]], [[0, 2], [-1, 1]]])  # (g⊙a)⁺ = [[.6, 0], [.4, .4]], [[0, 1], [0, .5]]
    a2 = t([[[0.5, 0.5], [0, 1]], [[1, 0], [1, 0]]])
    g2 = t([[[2, 2], [0, 0]], [[1, 0], [0, 0]]])  # (g⊙a)⁺ = [[1, 1], [0, 0]], [[1, 0], [0, 0]]
    # Ā1 = [[.3, .5], [.2, .45]] → R1 = I + Ā1; Ā2 = [[1, .5], [0, 0]] → R2 = R1 + Ā2 R1.
    expected = torch.tensor([[2.7, 1.725], [0.2, 1.45]], dtype=torch.float64)
    torch.testing.assert_close(tf.grad_rollout([a1, a2], [g1, g2])[0], expected)
    swapped = tf.grad_rollout([a1, a2], [g2, g1])[0]  # gradients matched to the wrong layers
    assert not torch.allclose(swapped, expected)
    with pytest.raises(InputError, match="gradients"):
        tf.grad_rollout([a1, a2], [g1])


def test_flow_on_a_two_layer_hand_example():
    # Â1 = [[1, 0], [.25, .75]], Â2 = [[.8, .2], [0, 1]]. Into the CLS output (token 0):
    # from input 0: 0→0→0 carries min(1, .8) = .8, 0→1→0 carries min(.25, .2) = .2 → 1.0;
    # from input 1: only 1→1→0, min(.75, .2) = .2. (Rollout's CLS row is [.85, .15].)
    a1, a2 = t([[1, 0], [0.5, 0.5]]), t([[0.6, 0.4], [0, 1]])
    exact = {"atol": 2**-20, "rtol": 0}  # capacities are rounded to multiples of 2⁻²⁰
    torch.testing.assert_close(tf.attention_flow([a1, a2]), torch.tensor([[1.0, 0.2]], dtype=torch.float64), **exact)
    flow_to_1 = tf.attention_flow([a1, a2], sink=1)
    torch.testing.assert_close(flow_to_1, torch.tensor([[0.25, 0.75]], dtype=torch.float64), **exact)
    torch.testing.assert_close(tf.rollout([a1, a2])[0, 0], torch.tensor([0.85, 0.15], dtype=torch.float64))


def test_flow_equals_networkx_max_flow_on_random_graphs():
    attn = [torch.rand(2, 3, 4, 4).softmax(-1) for _ in range(3)]
    flows = tf.attention_flow(attn)
    for b in range(2):
        g = nx.DiGraph()
        for layer, a in enumerate(attn):
            hat = tf.with_residual(tf.fuse_heads(a))[b]
            for i in range(4):
                for j in range(4):
                    g.add_edge((layer, j), (layer + 1, i), capacity=float(hat[i, j]))
        exact = [nx.maximum_flow_value(g, (0, j), (3, 0)) for j in range(4)]
        torch.testing.assert_close(flows[b], torch.tensor(exact), atol=4 * 2**-20, rtol=0)


def test_flow_refuses_large_graphs_and_bad_shapes():
    big = [torch.full((1, 1, 200, 200), 1 / 200)] * 8
    with pytest.raises(InputError, match="max_edges"):
        tf.attention_flow(big)
    with pytest.raises(InputError, match=r"\(B, heads, T, T\)"):
        tf.rollout([torch.rand(2, 5, 5)])
    with pytest.raises(InputError, match="disagree"):
        tf.rollout([torch.rand(1, 2, 5, 5), torch.rand(1, 2, 6, 6)])
