"""Containment (issue 27, items 1 and 2): a path a command removes or replaces lies inside the `--out` it was asked
to write and is a name that command writes; a marker listing anything else is refused in one line naming the
entry, and nothing is removed. A run is recognised only by its marker."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from attnscope import outdir
from attnscope.cli import main
from attnscope.errors import InputError
from attnscope.stream import core
from tiny_runs import TINY_ARGS as TINY


def tree_hash(root: Path, skip: Path) -> str:
    """A hash of every name, type, link target and file content under `root`, leaving out `skip` and its lock."""
    h = hashlib.sha256()
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if Path(base, d) != skip)
        for name in sorted(dirs + files):
            p = Path(base, name)
            if p == skip or name == f".{skip.name}.lock":
                continue
            h.update(str(p.relative_to(root)).encode())
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode())
            elif p.is_file():
                h.update(b"F" + p.read_bytes())
            else:
                h.update(b"D")
    return h.hexdigest()


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def _planted(root: Path) -> Path:
    """The layout of issue 27 item 1: two victim folders beside --out, a marker in --out listing both."""
    (root / "victim").mkdir(parents=True)
    (root / "victim" / "a.txt").write_text("precious")
    (root / "victim_abs").mkdir()
    (root / "victim_abs" / "b.txt").write_text("mine")
    out = root / "out"
    out.mkdir()
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("containment") / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY])
    return out


@pytest.mark.parametrize("command", ["explain", "bench", "sanity"])
def test_a_planted_marker_never_makes_a_streamed_overwrite_remove_folders_outside_out(run_dir, tmp_path, capsys,
                                                                                      command):
    root = tmp_path / "w"
    out = _planted(root)
    entries = ["../victim/", f"{root}/victim_abs/"]
    (out / outdir.MARKER).write_text(json.dumps({"format": outdir.FORMAT, "command": command, "files": entries,
                                                 "resumable": True}))
    before = tree_hash(root, out)
    extra = ["--methods", "saliency"] if command != "explain" else []
    code, err = _run([command, "--checkpoint", str(run_dir), "--images", "clutter", "--n", "2", "--stream",
                      "--overwrite", "--out", str(out), "--quiet", *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'../victim/'" in err, err
    assert tree_hash(root, out) == before and (root / "victim" / "a.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == [outdir.MARKER]  # nothing removed inside either


def test_train_resume_on_a_users_folder_with_a_config_json_removes_nothing(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "track").mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "checkpoints" / "notes.txt").write_text("notes")
    (mine / "track" / "x.txt").write_text("x")
    before = tree_hash(tmp_path, tmp_path / "none")
    code, err = _run(["train", "--resume", "--out", str(mine), "--epochs", "1", *TINY], capsys)
    assert code == 2 and "no run to resume" in err and len(err.strip().splitlines()) == 1
    assert tree_hash(tmp_path, tmp_path / "none") == before


def test_train_resume_of_a_marked_run_with_a_file_it_did_not_write_removes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "track").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "track" / "x.txt").write_text("x")
    (run / "thesis.tex").write_text("mine")
    outdir.write_marker(run, "train", ("config.json", "track/"))  # a run killed in its first epoch, then a user file
    before = tree_hash(tmp_path, tmp_path / "none")
    code, err = _run(["train", "--resume", "--out", str(run), "--epochs", "1", *TINY], capsys)
    assert code == 2 and "thesis.tex" in err and tree_hash(tmp_path, tmp_path / "none") == before


def test_a_streamed_resume_never_writes_through_a_shard_folder_that_is_a_link(run_dir, tmp_path, capsys):
    root = tmp_path / "w"
    out = _planted(root)
    (out / "maps").symlink_to(root / "victim")
    (out / "run.json").write_text("{}")
    outdir.write_marker(out, "explain", ["maps/", "run.json"])
    marker = json.loads((out / outdir.MARKER).read_text())
    (out / outdir.MARKER).write_text(json.dumps({**marker, "partial": True, "resumable": True}))
    before = tree_hash(root, out)
    code, err = _run(["explain", "--checkpoint", str(run_dir), "--images", "clutter", "--n", "2", "--stream",
                      "--resume", "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "symbolic link" in err and tree_hash(root, out) == before


# -- the property: random markers, links, .. and absolute entries ------------------------------------------------

NAMES = ["maps/", "run.json", "manifest.json", "shards/", "grid.png", "leaderboard.csv", "config.json", "x.txt",
         "checkpoints/", "report.html", "overlays/a/b.png", "maps/k.npy"]


def _entry(rng: random.Random, root: Path, out: Path) -> object:
    """One marker entry: mostly plausible names, some hostile (.., absolute, links, odd types)."""
    kind = rng.randrange(9)
    if kind == 0:
        return "../" * rng.randint(1, 3) + rng.choice(["victim/", "victim/a.txt", "out2/", ""])
    if kind == 1:
        return str(root / rng.choice(["victim", "victim/a.txt", "out/maps"])) + rng.choice(["", "/"])
    if kind == 2:
        return rng.choice(["maps/../../victim/", "./run.json", "maps//k.npy", "", "/", ".", "maps/.."])
    if kind == 3:
        return rng.choice([None, 3, ["maps/"], {"a": 1}, "run.json\0", "a\\..\\b"])
    return rng.choice(NAMES)


OWN = {"explain": (["maps", "overlays/a"], ["run.json", "manifest.json", "grid.png"]),
       "bench": (["shards"], ["run.json", "manifest.json", "leaderboard.csv"]),
       "train": (["checkpoints", "track"], ["config.json", "metrics.jsonl", "report.html"])}


def _layout(rng: random.Random, root: Path, out: Path, command: str) -> list[str]:
    """Files, folders and links inside `out` (some foreign, some links to the victims outside); returns its
    top-level names."""
    folders, files = OWN[command]
    if rng.random() < 0.2:
        folders, files = folders + ["mine"], files + ["thesis.tex"]
    for name in rng.sample(folders, rng.randint(0, len(folders))):
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "k.npy").write_bytes(b"k")
    for name in rng.sample(files, rng.randint(0, len(files))):
        (out / name).write_text("{}")
    if rng.random() < 0.2:
        for name in rng.sample([n for n in [*folders, *files] if "/" not in n], 1):
            if not os.path.lexists(out / name):
                (out / name).symlink_to(rng.choice([root / "victim", root / "victim" / "a.txt", Path("../victim")]))
    return [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in out.iterdir()]


@pytest.mark.parametrize("seed", range(4))
def test_random_markers_links_and_dotdot_entries_never_touch_anything_outside_out(tmp_path, seed):
    rng = random.Random(seed)
    removed = refused = 0
    for case in range(60):
        root = tmp_path / f"{seed}-{case}"
        out = _planted(root)
        (root / "out2").mkdir()
        (root / "out2" / "c.txt").write_text("theirs")
        command = rng.choice(sorted(OWN))
        files: list[object] = _layout(rng, root, out, command)  # what is there, listed: an honest marker ...
        files += [_entry(rng, root, out) for _ in range(rng.choice([0, 0, 1, 2]))]  # ... and planted entries
        (out / outdir.MARKER).write_text(json.dumps({"format": outdir.FORMAT, "command": command, "files": files,
                                                     "resumable": True}, default=str))
        before, inside_before = tree_hash(root, out), sorted(str(p) for p in out.rglob("*"))
        job = core.Sharded(command, out, {}, [0], 1, folder="maps" if command == "explain" else "shards")
        try:
            with outdir.lock(out):
                core._prepare(job, resume=False, overwrite=True)
            removed += 1
        except InputError as e:
            assert "\n" not in str(e)
            refused += 1
            assert sorted(str(p) for p in out.rglob("*")) == inside_before  # refused: nothing removed inside either
        assert tree_hash(root, out) == before, (seed, case, files)
        assert (root / "victim" / "a.txt").read_text() == "precious"
    assert removed > 5 and refused > 5, (removed, refused)  # both outcomes were exercised


def test_every_refused_entry_is_named_in_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for entry in ["../victim/", "/etc/", "maps/../../x", "thesis.tex", "./run.json"]:
        outdir.write_marker(out, "explain", [entry])
        with pytest.raises(InputError) as e:
            outdir.remove_listed(out, [entry], "explain")
        assert repr(entry) in str(e.value) and "\n" not in str(e.value)
    assert (out / outdir.MARKER).exists()  # refused: not even the marker went


def test_explain_text_output_is_replaced_with_overwrite_its_token_files_are_names_explain_writes(tmp_path):
    run = tmp_path / "clip"
    main(["train", "--model", "clip-tiny", "--data", "scenes", "--data-opt", "size=48", "--data-opt",
          "digit_size=[10,14]", "--model-opt", "image_size=48", "--model-opt", "dim=16", "--model-opt", "depth=1",
          "--model-opt", "heads=2", "--model-opt", "text_dim=16", "--model-opt", "embed_dim=8", "--n", "16",
          "--n-test", "8", "--epochs", "1", "--batch-size", "8", "--out", str(run), "--quiet"])
    out = tmp_path / "maps"
    argv = ["explain", "--model", str(run), "--images", "scenes", "--size", "48", "--n", "1", "--text", "a red three",
            "--methods", "gradcam", "--token-methods", "inputxgrad", "--out", str(out), "--quiet"]
    main(argv)
    assert {"tokens.json", "tokens.html"} <= set(outdir.read_marker(out)["files"])
    (out / "tokens.json").write_text("{}")
    main([*argv, "--overwrite"])  # an explain --text output is an explain output: --overwrite replaces it
    assert json.loads((out / "tokens.json").read_text())["texts"] == ["a red three"]
