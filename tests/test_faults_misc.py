"""The rest of issue 18: environment errors in one line, silent no-ops that now speak, help without torch,
readable epoch lines, the demo's thread count, and `make test` without chromium."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnscope import fileio, models
from attnscope.cli import main
from attnscope.cli.common import idle_cores
from attnscope.models import checkpoint
from attnscope.train.loop import epoch_line
from tiny_runs import TINY_ARGS as TINY

ROOT = Path(__file__).resolve().parents[1]


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def random_net(tmp_path_factory):
    return checkpoint.save(models.get("smallcnn", widths=[4, 8]), tmp_path_factory.mktemp("net") / "net.safetensors")


def test_a_full_disk_is_one_line_and_the_earlier_output_stays(random_net, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    argv = ["explain", "--checkpoint", str(random_net), "--images", "clutter", "--n", "2", "--out", str(out), "--quiet"]
    main(argv)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    writes = []

    def full(path, data):
        writes.append(path)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        Path(path).write_bytes(data)

    monkeypatch.setattr(fileio, "write_bytes", full)
    code, err = _run([*argv, "--overwrite"], capsys)
    assert code == 2 and err.startswith("error: No space left on device") and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_a_folder_that_cannot_be_written_is_refused_before_any_work(random_net, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # as a read-only tmp_path
    code, err = _run(["explain", "--checkpoint", str(random_net), "--images", "clutter", "--out",
                      str(tmp_path / "o")], capsys)
    assert code == 2 and "cannot write in" in err and list(tmp_path.iterdir()) == []


def test_the_weights_only_refusal_is_one_line_that_never_suggests_unsafe_loading(tmp_path, capsys):
    weights = tmp_path / "w.pth"
    torch.save({"model": models.get("resnet18", num_classes=2).state_dict(), "args": argparse_like()}, weights)
    code, err = _run(["explain", "--checkpoint", "resnet18", "--weights", str(weights), "--images", "clutter",
                      "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pickled Python objects" in err
    assert "weights_only=False" not in err and "likely succeed" not in err and "trusted" not in err


class argparse_like:  # noqa: N801 - stands for the Namespace a training script pickles next to its weights
    lr = 0.1


def test_resuming_a_run_that_already_has_its_epochs_says_there_is_nothing_to_train(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY])
    main(["train", "--out", str(out), "--epochs", "1", *TINY, "--resume"])
    assert "has already trained 1 epochs and --epochs is 1: nothing to train" in capsys.readouterr().err


def test_epoch_lines_are_text_grouped_by_split():
    record = {"epoch": 2, "step": 250, "lr": 0.0012, "train_loss": 0.41234, "train_acc": 0.875,
              "train_time_s": 12.345, "test_loss": 0.3891, "test_acc": 0.88, "track_s": 0.5}
    assert epoch_line(record, 5) == ("epoch 2/5 (step 250): train loss 0.4123, acc 0.875, time 12.3 s | "
                                     "test loss 0.3891, acc 0.88 | lr 0.0012, track 0.5 s")


@pytest.mark.parametrize("cores, load, threads", [(2, 0.0, 2), (2, 1.2, 1), (2, 5.0, 1), (16, 3.4, 13), (4, 0.6, 3)])
def test_the_demo_starts_as_many_threads_as_cores_stand_idle(cores, load, threads):
    assert idle_cores(cores, load) == threads


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["demo", "--help"], ["explain", "--help"],
                                  ["sanity", "-h"], ["bench", "--help"], ["caption", "--help"], ["report", "--help"],
                                  ["train", "--no-such-flag"], ["explain", "--images", "x"]])
def test_help_and_usage_errors_never_import_torch(argv):
    probe = ("import sys; from attnscope.cli import main\ncode = 0\ntry:\n    main(sys.argv[1:])\n"
             "except SystemExit as e:\n    code = e.code\nprint('RESULT', 'torch' in sys.modules, code)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True, timeout=120)
    result = done.stdout.rsplit("RESULT", 1)[-1].split()
    assert result == ["False", "2" if "-h" not in argv and "--help" not in argv else "0"], done.stdout + done.stderr


def test_make_tests_chromium_step_says_in_one_line_what_to_install_and_never_fails(tmp_path):
    script = ROOT / ".ci" / "ensure-chromium"
    bare = {"PATH": str(tmp_path), "ATTNSCOPE_NO_INSTALL": "1"}  # a PATH without chromium, not installing
    (tmp_path / "id").symlink_to("/usr/bin/id")
    done = subprocess.run(["/bin/sh", str(script)], env=bare, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "apt-get install chromium" in done.stderr
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    found = subprocess.run(["/bin/sh", str(script)], env=bare, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0 and found.stderr == ""  # chromium on PATH: nothing to do


def test_the_browser_test_looks_for_chromium_where_the_chromium_step_does():
    source = (ROOT / "tests" / "test_report_browser.py").read_text()
    assert 'shutil.which("chromium")' in source and "pytest.skip(" in source
    assert 'pytest.fail(f"no chromium' not in source
