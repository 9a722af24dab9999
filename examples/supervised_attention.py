"""Supervised attention for a captioner in a plain PyTorch loop (Liu et al., AAAI 2017).

Each word that names an object pulls Show, Attend and Tell's α toward the object's box:
loss = NLL + λ · Σ_t −Σ_i β_ti log α_ti, with β_t the box spread over the attention grid.
`attnscope train --model sat --data scenes --guide sat --guide-weight 1` runs the same loss.

    PYTHONPATH=src python examples/supervised_attention.py --steps 30
"""

from __future__ import annotations

import argparse

import torch

import attnscope as ats
from attnscope.data import DigitScenes, collate_captions
from attnscope.guide.captions import box_attention
from attnscope.train.captioning import sequence_nll


def attention_in_boxes(model: torch.nn.Module, batch) -> float:
    """Mean share of each grounded word's α that lies on its box's cells."""
    with torch.no_grad():
        out = model.eval()(batch.images, batch.captions)
    beta, has = box_attention(batch.boxes, out.grid, tuple(batch.images.shape[-2:]))
    return float(((beta > 0) * out.alphas).sum(-1)[has].mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--weight", type=float, default=1.0, help="λ of the supervised-attention term")
    args = p.parse_args()
    torch.manual_seed(0)
    scenes = DigitScenes("train", 64, size=48, digit_size=(10, 14), gap=2)
    vocab = scenes.vocabulary()
    model = ats.models.get("sat", vocab=vocab.to_json(), encoder_widths=[8, 16], embed_dim=16, hidden_dim=32,
                           attn_dim=16, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = collate_captions([scenes[i] for i in range(16)], vocab)  # boxes of every target word: probe.boxes
    print(f"attention on the named object before: {attention_in_boxes(model, probe):.2f}")
    for step in range(args.steps):
        model.train()
        batch = collate_captions([scenes[(16 * step + i) % len(scenes)] for i in range(16)], vocab, reference=None)
        penalty, logits = ats.guide.caption_attention(model, batch.images, batch.captions, batch.boxes)
        targets = batch.captions[:, 1:]
        nll = sequence_nll(logits, targets, (targets != vocab.pad_id).float()).mean()
        loss = nll + args.weight * penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"attention on the named object after {args.steps} steps: {attention_in_boxes(model, probe):.2f}")


if __name__ == "__main__":
    main()
