"""Output folders: nothing a command did not write is ever removed, one writer at a time, a killed run's
temporary folder is cleaned up by the next run of the same command (issue 18, items 1, 4, 6, 8)."""

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

from attnscope import fileio, outdir
from attnscope.cli import main
from attnscope.errors import InputError
from tiny_runs import TINY_ARGS as TINY

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    return e.value.code, err


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(path: Path) -> dict[str, bytes]:
    (path / "figures").mkdir(parents=True)
    (path / "thesis.tex").write_text("precious")
    (path / "figures" / "a.png").write_bytes(b"\x89PNG")
    return _listing(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY])
    return out


# -- the rule: absent, empty, or an earlier output of the same command with --overwrite ------------------------


def test_check_takes_absent_and_empty_folders_and_an_own_output_only_with_overwrite(tmp_path, monkeypatch):
    assert outdir.check(tmp_path / "new", "explain") is False
    (tmp_path / "empty").mkdir()
    assert outdir.check(tmp_path / "empty", "explain") is False
    mine = tmp_path / "mine"
    _user_folder(mine)
    with pytest.raises(InputError, match="pass --overwrite"):
        outdir.check(mine, "explain")
    with pytest.raises(InputError, match="does not hold an `attnscope explain` output"):
        outdir.check(mine, "explain", overwrite=True)
    outdir.write_marker(mine, "sanity", ["thesis.tex", "figures/"])
    with pytest.raises(InputError, match="does not hold an `attnscope explain` output"):
        outdir.check(mine, "explain", overwrite=True)
    with pytest.raises(InputError, match="lists 'figures/', which `attnscope sanity` never writes"):
        outdir.check(mine, "sanity", overwrite=True)  # a marker may list only names the command writes
    (mine / "thesis.tex").rename(mine / "data.csv")
    (mine / "figures").rename(mine / "shards")
    outdir.write_marker(mine, "sanity", ["data.csv", "shards/"])
    assert outdir.check(mine, "sanity", overwrite=True) is True  # every file listed: sub-folders own their files
    (mine / "notes.txt").write_text("added by hand")
    with pytest.raises(InputError, match=r"did not write \(notes.txt\)"):
        outdir.check(mine, "sanity", overwrite=True)


@pytest.mark.parametrize("make, message", [
    (lambda t: (t / "real").mkdir() or (t / "o").symlink_to(t / "real"), "symbolic link"),
    (lambda t: (t / "file").write_text("x") and None, "is a file, not a folder"),
    (lambda t: (t / "o").write_text("x") and None, "exists and is not a folder"),
])
def test_check_refuses_links_files_and_paths_under_files(tmp_path, make, message):
    make(tmp_path)
    target = tmp_path / "file" / "sub" if "file, not" in message else tmp_path / "o"
    with pytest.raises(InputError, match=message):
        outdir.check(target, "explain", overwrite=True)


def test_check_refuses_the_working_folder_and_the_folders_holding_it(tmp_path, monkeypatch):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    for out in (".", "..", str(tmp_path), "../b"):
        with pytest.raises(InputError, match="current folder"):
            outdir.check(out, "explain", overwrite=True)


def test_atomic_dir_replaces_only_when_told_and_removes_only_its_own_folders(tmp_path):
    mine = tmp_path / "mine"
    before = _user_folder(mine)
    with pytest.raises(InputError, match="not empty"), fileio.atomic_dir(mine) as tmp:
        (tmp / "result.txt").write_text("new")
    assert _listing(mine) == before
    with pytest.raises(RuntimeError), fileio.atomic_dir(mine, replace=True) as tmp:
        (tmp / "result.txt").write_text("half")
        raise RuntimeError("failed while writing")
    assert _listing(mine) == before  # a failed block never touches the old folder
    with fileio.atomic_dir(mine, replace=True) as tmp:
        (tmp / "result.txt").write_text("new")
    assert _listing(mine) == {"result.txt": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no .partial or .old left


def test_safetensors_files_get_the_permissions_of_any_new_file(tmp_path):
    mask = os.umask(0o022)
    try:
        fileio.save_tensors(tmp_path / "t.safetensors", {"x": torch.zeros(2)})
        fileio.write_json(tmp_path / "t.json", {})
    finally:
        os.umask(mask)
    assert (tmp_path / "t.safetensors").stat().st_mode & 0o777 == 0o644 == (tmp_path / "t.json").stat().st_mode & 0o777


# -- commands ------------------------------------------------------------------------------------------------


def test_demo_leaves_a_users_folder_and_the_working_folder_alone(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    before = _user_folder(mine)
    for extra in ([], ["--overwrite"]):
        code, err = _run(["demo", "--out", str(mine), "--epochs", "1", "--n", "64", "--probe", "2", "--quiet",
                          *extra], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and _listing(mine) == before
    monkeypatch.chdir(mine)
    code, err = _run(["demo", "--out", ".", "--overwrite", "--quiet"], capsys)
    assert code == 2 and "current folder" in err and _listing(mine) == before


def test_explain_overwrite_from_inside_an_earlier_output_leaves_it_whole(run_dir, tmp_path, capsys, monkeypatch):
    earlier = tmp_path / "earlier"
    main(["explain", "--checkpoint", str(run_dir), "--images", "clutter", "--n", "1", "--methods", "cam",
          "--out", str(earlier), "--quiet"])
    before = _listing(earlier)
    monkeypatch.chdir(earlier)
    code, err = _run(["explain", "--checkpoint", str(run_dir), "--images", "clutter", "--n", "1", "--out", ".",
                      "--overwrite", "--quiet"], capsys)
    assert code == 2 and "current folder" in err and _listing(earlier) == before


def test_a_killed_runs_partial_folder_is_removed_by_the_next_run_of_that_command_only(run_dir, tmp_path, capsys):
    out = tmp_path / "o"
    theirs = {}
    for name, command in ((".o.abcdefgh.partial", "explain"), (".o.ijklmnop.partial", "sanity"), (".o.qrstuvwx.old",
                                                                                                   "explain")):
        (tmp_path / name / "overlays").mkdir(parents=True)
        (tmp_path / name / "overlays" / "x.png").write_bytes(b"x" * 1000)
        outdir.write_marker(tmp_path / name, command, (), partial=True)
        theirs[name] = command
    (tmp_path / ".o.zzzzzzzz.partial").mkdir()  # made, then killed before its marker
    (tmp_path / ".o.backup").mkdir()  # the user's, though named alike
    (tmp_path / ".o.backup" / "keep.txt").write_text("mine")
    main(["explain", "--checkpoint", str(run_dir), "--images", "clutter", "--n", "1", "--out", str(out), "--quiet"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".o.backup", ".o.ijklmnop.partial", "o"]  # sanity's and the user's stay
    assert (tmp_path / ".o.backup" / "keep.txt").read_text() == "mine"
    assert capsys.readouterr().err.count("left by an interrupted `attnscope explain`") == 3


def test_train_overwrite_puts_the_earlier_run_back_when_the_new_one_fails_before_a_checkpoint(tmp_path, capsys,
                                                                                              monkeypatch):
    from attnscope.errors import DataError
    from attnscope.train.tasks import Classification

    out = tmp_path / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY])
    before = _listing(out)

    def bad_image(self, model, batch, device):
        raise DataError("cannot read image x.png: truncated")

    monkeypatch.setattr(Classification, "loss", bad_image)
    code, err = _run(["train", "--out", str(out), "--epochs", "1", "--overwrite", *TINY], capsys)
    assert code == 2 and "truncated" in err and _listing(out) == before
    fresh = tmp_path / "fresh"
    code, err = _run(["train", "--out", str(fresh), "--epochs", "1", *TINY], capsys)
    assert code == 2 and not fresh.exists()  # a new run that failed in its first epoch leaves nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_train_refuses_a_nan_loss_in_one_line_and_leaves_nothing(tmp_path, capsys):
    code, err = _run(["train", "--out", str(tmp_path / "run"), "--epochs", "1", *TINY, "--lr", "1e30"], capsys)
    assert code == 2 and "the loss became" in err and "lower --lr" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# -- locks ---------------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from attnscope import outdir
    with outdir.lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_a_second_writer_fails_at_once_naming_the_owner_and_a_killed_owners_lock_is_taken_over(run_dir, tmp_path,
                                                                                               capsys):
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["explain", "--checkpoint", str(run_dir), "--images", "clutter", "--n", "1", "--out", str(out),
                "--quiet"]
        code, err = _run(argv, capsys)
        assert code == 2 and f"pid {holder.pid}" in err and not out.exists()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert (tmp_path / ".o.lock").read_text().strip() == str(holder.pid)  # left by the killed owner
        main(argv)  # the kernel dropped the dead owner's lock
        assert (out / "manifest.json").is_file() and not (tmp_path / ".o.lock").exists()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_lock_file_that_is_not_attnscopes_is_left_alone(tmp_path):
    (tmp_path / ".o.lock").write_text("some other program's lock\n")
    with pytest.raises(InputError, match="not an attnscope lock file"), outdir.lock(tmp_path / "o"):
        pass
    assert (tmp_path / ".o.lock").read_text() == "some other program's lock\n"


@pytest.mark.slow
def test_two_trainings_to_one_new_folder_one_runs_the_other_fails_with_one_line(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "attnscope", "train", "--out", str(out), "--epochs", "2", *TINY]
    procs = [subprocess.Popen([*argv, "--seed", str(seed)], env=env, stderr=subprocess.PIPE, text=True)
             for seed in (0, 1)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert len(loser.strip().splitlines()) == 1 and ("being written by another process" in loser
                                                      or "pass --overwrite" in loser)
    winner_seed = next(seed for (code, _), seed in zip(results, (0, 1), strict=True) if code == 0)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # one run's lines, not two interleaved
    assert json.loads((out / "config.json").read_text())["seed"] == winner_seed


def test_a_report_written_into_a_run_becomes_part_of_it_so_overwrite_still_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY])
    main(["report", str(out)])
    assert "report.html" in outdir.read_marker(out)["files"]
    old_config = (out / "config.json").stat().st_ino
    main(["train", "--out", str(out), "--epochs", "1", "--overwrite", *TINY])
    assert (out / "config.json").stat().st_ino != old_config and not (out / "report.html").exists()


def test_a_lock_file_planted_as_a_link_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / ".o.lock").symlink_to(victim)
    with pytest.raises(InputError, match="symbolic link"), outdir.lock(tmp_path / "o"):
        pass
    assert victim.read_text() == "keep"
