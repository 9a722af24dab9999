"""The engine's runnable examples run as documented (README, docs/architecture.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("script, args, expect", [
    ("explain_top5.py", [], "maps (4, 5, 64, 64)"),
    ("differentiable_gradcam.py", ["--steps", "2"], "model still in train mode after explain: True"),
    ("add_a_method.py", [], "cam (2, 64, 64)"),
    ("clip_phrases.py", ["--steps", "2"], "chefer-mm [('<start>', "),
    ("explain_dataset.py", ["--n", "10", "--shard-size", "4", "--out", "OUT"], "10 images in 3 shards"),
    ("score_dataset.py", ["--n", "6", "--shard-size", "3", "--out", "OUT"], "shard 0: 3 images"),
])
def test_example_runs(script: str, args: list[str], expect: str, tmp_path) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                            "PYTHONPATH": str(EXAMPLES.parent / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert expect in done.stdout
