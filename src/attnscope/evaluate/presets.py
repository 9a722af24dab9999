"""Leaderboard presets: named choices of methods, columns and settings, for `attnscope bench --preset NAME`.

"default" is the leaderboard as it is: every applicable method, the default columns, deletion and insertion one
image row per step, 10 robustness copies. On resnet18 at 224 px its floor — the passes its methods and columns
require, at this machine's best cost per pass — is about 2,200 CPU s per image (`bench/census.py
--leaderboard`): SS-CAM's 17,920 masked forwards, RISE's 4,000 and four curves of 225 points for each of 31 maps.

"fast" keeps every group at a fraction of that: five methods that need one pass each (three gradient CAMs,
saliency and input × gradient) and the calibration maps; localisation as the default has it (pointing game,
energy in the box, relevance mass: where boxes or masks exist); deletion and insertion with 8 steps per curve,
Average Drop and Increase in Confidence, infidelity (one set of passes for every map); the max- and
avg-sensitivity of 3 perturbed copies; sparseness and complexity. bench/README.md has its cost per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from attnscope.errors import InputError
from attnscope.registry import Registry


@dataclass(frozen=True)
class Preset:
    """Methods (None: every applicable one), columns, curve steps (None: one image row per step) and the robustness
    copies of a leaderboard."""

    methods: tuple[str, ...] | None
    metrics: str
    steps: int | None
    perturbations: int

    def step(self, height: int, width: int) -> int | None:
        """Pixels per step of the deletion and insertion curves on `height` × `width` images (None: one row)."""
        return None if self.steps is None else math.ceil(height * width / self.steps)


PRESETS: Registry[Preset] = Registry("leaderboard preset")
PRESETS.register("default", Preset(None, "default", None, 10))
PRESETS.register("fast", Preset(
    ("gradcam", "gradcam++", "layercam", "saliency", "inputxgrad"),
    "pointing,energy_box,mass_mask,deletion_zero,insertion_blur,avg_drop_pct,increase_pct,infidelity,"
    "max_sensitivity,avg_sensitivity,sparseness,complexity", 8, 3))


def preset(name: str) -> Preset:
    """The preset called `name` (`PRESETS`), or an `InputError` naming those there are."""
    if name not in PRESETS:
        raise InputError(f"unknown leaderboard preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS.get(name)
