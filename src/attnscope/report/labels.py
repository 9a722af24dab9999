"""What a picture says beside its maps: which image, which class each map explains, the true and the
predicted class, and the model's probability — by name where the model has class names.

    class_text(285, names)                 # "Egyptian cat (285)"; without names "class 285"
    row_labels(targets, names=..., probs=..., labels=..., images=["cat.png", ...])
    # ["cat.png\\nexplains Egyptian cat (285) p 0.54\\ntrue tabby (281) · predicted Egyptian cat", ...]

Grids (`report.grid`), `ats.show`, the explain manifest and the report's tables use these words.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def class_text(index: int, names: Sequence[str] | None = None) -> str:
    """A class as its name and index ("Egyptian cat (285)"), "class 285" without names, "a score" for -1."""
    index = int(index)
    if index < 0:
        return "a score"  # a callable target: no class
    if names is not None and index < len(names):
        return f"{names[index]} ({index})"
    return f"class {index}"


def prob(p: float) -> str:
    """A probability in a few characters: two decimals; two significant digits below 0.01 ("0.00031"), "<0.0001"."""
    if p >= 0.01 or p == 0:
        return f"{p:.2f}"
    return f"{p:.2g}" if p >= 0.0001 else "<0.0001"


def probabilities(logits: torch.Tensor | None) -> torch.Tensor | None:
    """Softmax of (B, N) logits (float, CPU, no graph); None for anything else."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        return None
    return logits.detach().float().cpu().softmax(1)


def row_labels(targets: torch.Tensor | None, names: Sequence[str] | None = None, probs: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, images: Sequence[str] | None = None) -> list[str]:
    """One label per image (lines joined by newlines): its name, the class its maps explain with the
    model's probability, and — where known — the true class and the predicted one (when they differ from
    what is explained). `targets` (B,) explained classes (a (B, K) table gives its first column)."""
    b = next(len(t) for t in (targets, probs, labels, images) if t is not None)
    out = []
    for i in range(b):
        lines = [str(images[i])] if images is not None else []
        t = None
        if targets is not None:
            row = targets[i]
            t = int(row.flatten()[0]) if isinstance(row, torch.Tensor) else int(row)
            p = f" p {prob(float(probs[i, t]))}" if probs is not None and 0 <= t < probs.shape[1] else ""
            lines.append(f"explains {class_text(t, names)}{p}")
        facts = []
        if labels is not None and int(labels[i]) >= 0:
            truth = int(labels[i])
            facts.append("the true class" if truth == t else f"true {class_text(truth, names)}")
        if probs is not None:
            top = int(probs[i].argmax())
            if top != t:
                facts.append(f"predicted {class_text(top, names)} p {prob(float(probs[i, top]))}")
        if facts:
            lines.append(" · ".join(facts))
        out.append("\n".join(lines))
    return out
