"""The table of docs/models.md: per family of tests/families.py, the layer "auto" picks and why, and which
transformer methods apply (✓) or refuse (the first words of the reason) — each row is what
tests/test_families.py checks.

    OMP_NUM_THREADS=1 PYTHONPATH=src python tools/family_table.py > /tmp/table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import attnscope as ats  # noqa: E402
from attnscope.errors import NotApplicableError  # noqa: E402
from attnscope.explain.layers import auto_layer  # noqa: E402
from families import ATTENTION_METHODS, FAMILIES  # noqa: E402
from test_families import images, target_of  # noqa: E402

SHORT = {  # a refusal's reason, by the words that start it
    "it has no attention layers": "no attention",
    "attention flow is a max-flow through the layers of one token set": "one token set only",
    "this model is an encoder–decoder": "encoder–decoder",
    "composes every attention layer": "multi-scale head",
}


def reason(message: str) -> str:
    for start, short in SHORT.items():
        if start in message:
            return short
    return message[:40]


def row(name: str) -> str:
    fam = FAMILIES[name]
    model, x = fam.build(), images(name)
    layer, _why = auto_layer(model, x)
    cells = []
    for method in ATTENTION_METHODS:
        try:
            ats.explain(model, x, method, targets=target_of(name), output=fam.output)
            cells.append("✓")
        except NotApplicableError as e:
            cells.append(f"– ({reason(str(e))})")
    return f"| {name} | `{layer}` | " + " | ".join(cells) + " |"


def main() -> None:
    torch.set_num_threads(1)
    print("| family | auto layer | " + " | ".join(f"`{m}`" for m in ATTENTION_METHODS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in ATTENTION_METHODS) + " |")
    for name in FAMILIES:
        print(row(name), flush=True)


if __name__ == "__main__":
    main()
