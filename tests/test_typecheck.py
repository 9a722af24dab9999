"""A type checker accepts the public calls (`ats.explain(model, x, "gradcam")`, `ats.Explainer(...)`) and sees
their real signatures: it refuses a wrong one. Runs `make typecheck`'s mypy (settings in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRONG = '''import torch
import attnscope as ats

ats.explain(torch.nn.Linear(2, 2), torch.rand(1, 2), methods=3.5)
ats.Explainer(("gradcam",), layers="features")
'''


def _mypy(*files: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *files], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_the_public_calls_type_check_and_a_wrong_call_does_not(tmp_path) -> None:
    good = _mypy("tests/typecheck/public_calls.py", cache=tmp_path / "cache")
    assert good.returncode == 0, good.stdout + good.stderr
    wrong = tmp_path / "wrong.py"
    wrong.write_text(WRONG)
    bad = _mypy(str(wrong), cache=tmp_path / "cache")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'Argument "methods" to "explain" has incompatible type "float"' in bad.stdout
    assert 'Unexpected keyword argument "layers" for "Explainer"' in bad.stdout
