"""kill -9 during `sanity`, during `train` before its first checkpoint, and during `demo`: the output is absent
or complete, and the next run of the same command recovers (issue 18, items 6 and 7)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnscope.cli import main
from tiny_runs import TINY_ARGS as TINY

SRC = Path(__file__).resolve().parents[1] / "src"

# Runs `attnscope ARGV...` and SIGKILLs itself on the N-th call of MODULE.FUNCTION (after it returns if
# AFTER, before it runs otherwise): a crash at a chosen point, with no chance to clean up.
CHILD = textwrap.dedent("""
    import importlib, os, signal, sys
    import torch
    torch.set_num_threads(1)
    module, function, nth, after = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "after"
    target = importlib.import_module(module)
    original, calls = getattr(target, function), []
    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == nth and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if len(calls) == nth and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(target, function, dying)
    from attnscope.cli import main
    main(sys.argv[5:])
""")


def _killed(tmp_path: Path, where: str, nth: int, when: str, argv: list[str]) -> None:
    module, function = where.rsplit(".", 1)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, module, function, str(nth), when, *argv], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".old")))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY, "--data-opt", "size=48"])  # HOG needs 48 px maps
    return out


@pytest.mark.slow
def test_sanity_killed_mid_write_leaves_no_output_and_the_next_run_cleans_up(run_dir, tmp_path, capsys):
    out = tmp_path / "sanity"
    argv = ["sanity", "--checkpoint", str(run_dir), "--methods", "saliency,gradcam", "--images", "2", "--keep", "2",
            "--out", str(out), "--quiet"]
    _killed(tmp_path, "attnscope.report.figures.save_png", 1, "after", argv)  # after the first map grid
    assert not out.exists()
    [partial] = _partials(tmp_path)
    written = sorted(p.name for p in (tmp_path / partial).iterdir())
    assert "cascading.csv" in written and "cascading_maps_0.png" in written and "cascading_maps_1.png" not in written
    main(argv)
    assert _partials(tmp_path) == [] and "left by an interrupted `attnscope sanity`" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".attnscope-output.json", "cascading.csv", "cascading.json",
                                                     "cascading_maps_0.png", "cascading_maps_1.png",
                                                     "cascading_similarity.png"]


@pytest.mark.slow
def test_train_killed_before_its_first_checkpoint_is_resumed_afresh_and_equals_an_uninterrupted_run(tmp_path,
                                                                                                    capsys):
    out, reference = tmp_path / "run", tmp_path / "reference"
    argv = ["train", "--out", str(out), "--epochs", "2", *TINY, "--track", "gradcam", "--probe", "4"]
    _killed(tmp_path, "attnscope.train.state.save_state", 1, "before", argv)  # epoch 1 ends, its checkpoint not
    assert (out / "config.json").is_file() and not list((out / "checkpoints").glob("*.safetensors"))
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    with pytest.raises(SystemExit) as e:  # neither a plain new run ...
        main(argv)
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err
    main([*argv, "--resume"])  # ... but --resume takes it: it starts afresh and says so
    assert "starting it afresh" in capsys.readouterr().err
    main(["train", "--out", str(reference), *argv[3:]])
    lines = [[{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in
              (folder / "metrics.jsonl").read_text().splitlines()] for folder in (out, reference)]
    assert lines[0] == lines[1] and [r["epoch"] for r in lines[0]] == [1, 2]
    resumed, uninterrupted = (load_file(str(f / "model.safetensors")) for f in (out, reference))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    steps = [[e["step"] for e in json.loads((f / "track" / "index.json").read_text())["snapshots"]]
             for f in (out, reference)]
    assert steps[0] == steps[1] == [0, 2, 4]


@pytest.mark.slow
def test_demo_killed_after_training_leaves_no_output_and_the_next_demo_cleans_up(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "1", "--n", "96", "--probe", "2", "--quiet"]
    _killed(tmp_path, "attnscope.cli.demo.explain_all", 1, "before", argv)  # trained, not yet explained
    assert not out.exists()
    [partial] = _partials(tmp_path)
    left = tmp_path / partial
    assert (left / "model.safetensors").is_file() and not (left / "maps.safetensors").exists()
    main(argv)
    assert _partials(tmp_path) == [] and "left by an interrupted `attnscope demo`" in capsys.readouterr().err
    assert (out / "report.html").is_file() and json.loads((out / "config.json").read_text())["out"] == str(out)
