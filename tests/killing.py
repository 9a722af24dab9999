"""Kill -9 a streamed run once its first shard is on disk: the resume tests of explain, bench and sanity."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import attnscope as ats


def kill_after_first_shard(cmd: list[str], shard: Path, timeout: float = 120) -> None:
    """Run `cmd` (an `attnscope ... --stream` command line), SIGKILL it as soon as `shard` exists, and check it
    died of the signal (its stderr in the failure message otherwise)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(ats.__file__).parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while not shard.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
