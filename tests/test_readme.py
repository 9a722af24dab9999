"""The README as a tested artefact: every ```python block of README.md runs as written, each in a fresh namespace,
in a folder where a tiny trained run sits at `runs/demo` (the path the README uses)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every ```python block of a markdown text."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


BLOCKS = python_blocks((ROOT / "README.md").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A working folder with `runs/demo`: SmallCNN of the demo's shape, narrower, one epoch on 64 images."""
    from attnscope.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("readme")
    fit(TrainConfig(model="smallcnn", data="clutter", n=64, n_test=8, epochs=1, batch_size=32, quiet=True,
                    model_cfg={"widths": [4, 4, 8, 8]}, out=str(root / "runs" / "demo")))
    return root


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 6
    sources = "\n".join(src for _, src in BLOCKS)
    for used in ("ats.explain(", "ats.show(", "ats.evaluate.leaderboard(", "ats.track.AttentionTracker(",
                 "ats.sanity.model_randomization(", "ats.list("):
        assert used in sources


@pytest.mark.parametrize("line,source", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_a_readme_block_runs_as_written(line, source, folder, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(folder)
    code = compile(source, f"README.md block at line {line}", "exec")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=DeprecationWarning, module="__readme__")  # no stale call
        exec(code, {"__name__": "__readme__"})  # a fresh namespace: the block defines what it uses
