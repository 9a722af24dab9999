"""`examples/show.py` runs as the README says and writes its figure."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_show_example_writes_a_png(tmp_path):
    out = tmp_path / "maps.png"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "show.py"), "", str(out)], capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                                       "PYTHONPATH": str(ROOT / "src"), "MPLCONFIGDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}" in done.stdout and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
