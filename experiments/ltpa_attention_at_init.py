"""How peaked LTPA's softmax attention is at initialisation, for pc and dp, on the hard clutter images.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/ltpa_attention_at_init.py

Prints, per estimator, the mean largest attention weight and the mean entropy as a share of the
uniform distribution's (1.0: uniform; 0: all attention on one position), over 5 initialisations.
"""

from __future__ import annotations

import statistics

import torch

from attnscope import data, metrics, models

HARD = {"size": 64, "digit_size": (10, 16), "n_fragments": 12}  # as in ltpa_clutter.py


def main() -> None:
    torch.set_num_threads(1)
    test = data.ClutteredDigits("test", 64, **HARD)
    x = torch.stack([test[i].image for i in range(len(test))])  # (64, 3, 64, 64)
    print("| compatibility | estimator | grid | largest weight | entropy / log N |")
    print("|---|---|---|---|---|")
    for comp in ("pc", "dp"):
        rows: dict[str, list[tuple[float, float]]] = {}
        for seed in range(5):
            torch.manual_seed(seed)
            model = models.get("ltpa", compatibility=comp)  # training mode: batch statistics, as at step 0
            with torch.no_grad():
                _, maps = model(x, return_attention=True)
            for name, a in maps.items():
                p = a.flatten(1)  # (B, N)
                entropy = metrics.entropy(a)  # (B,) normalised to [0, 1]
                rows.setdefault(name, []).append((float(p.max(1).values.mean()), float(entropy.mean())))
        for name, vals in rows.items():
            grid = "×".join(str(s) for s in maps[name].shape[1:])
            print(f"| {comp} | {name} | {grid} | {statistics.mean(v[0] for v in vals):.3f} | "
                  f"{statistics.mean(v[1] for v in vals):.3f} |")


if __name__ == "__main__":
    main()
