"""The configuration of Show, Attend and Tell (`models.sat`), read by its encoder, decoder and model alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ATTENTION = ("soft", "hard")
INIT_STATES = ("mean", "zero", "learned")  # "mean" is the paper's; the others are not in it


@dataclass(frozen=True)
class SATConfig:
    vocab: dict[str, Any] | None = None  # Vocabulary.to_json(); required
    attention: str = "soft"  # "soft" (deterministic) or "hard" (stochastic)
    encoder: str = "smallcnn"  # "smallcnn" or a torchvision model name (e.g. "resnet18")
    encoder_layer: str | None = None  # torchvision only: the node whose output are the annotations
    encoder_widths: tuple[int, ...] = (16, 32, 64, 128)  # smallcnn only: one block per width
    freeze_encoder: bool = False  # no gradients and BatchNorm statistics kept (as the paper's VGG)
    encoder_lr_scale: float = 1.0  # a fine-tuned encoder learns at this times the run's learning rate
    position_channels: bool = False  # not in the paper: append each a_i's (x, y) in [-1, 1] (CoordConv-like)
    init_state: str = "mean"  # h0, c0 from the mean annotation (paper); not in the paper: "zero", "learned"
    annotation_scale: float = 1.0  # not in the paper: the CNN features are multiplied by this (not the positions)
    attend_word: bool = False  # not in the paper: the word just read, E y_{t−1}, enters the attention's score
    embed_dim: int = 64
    hidden_dim: int = 256
    attn_dim: int = 128
    gate: bool = True  # the scalar β
    dropout: float = 0.5
    expectation_prob: float = 0.5  # hard attention: chance a caption uses α instead of a sample
    max_len: int = 20  # longest generated caption, <end> included
