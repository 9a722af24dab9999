"""`attnscope explain --stream`: shards equal `explain()`; a kill -9 resumed equals an uninterrupted run;
two torchrun processes (gloo, CPU) write what one process writes; refusals are one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import attnscope as ats
from attnscope.cli import main
from attnscope.models import checkpoint
from attnscope.stream import NamedData, Streaming, explain_dataset
from killing import kill_after_first_shard

ARGS = ["--images", "clutter", "--n", "10", "--stream", "--shard-size", "3", "--batch-size", "2",
        "--methods", "gradcam,occlusion", "--option", "occlusion.window=16", "--option", "occlusion.stride=8"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[8, 16])
    return str(checkpoint.save(model, tmp_path_factory.mktemp("run") / "model.safetensors"))


def _run(argv: list[str]) -> None:
    try:
        main(["explain", *argv, "--quiet"])
    except SystemExit as e:
        assert e.code in (0, None)


def _shards(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(p) for p in sorted((out / "maps").iterdir())}


def _same_output(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    sa, sb = _shards(a), _shards(b)
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert sa[name].keys() == sb[name].keys()
        for key in sa[name]:
            assert torch.equal(sa[name][key], sb[name][key]), (name, key)
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert {k: v for k, v in ma.items() if k not in ignore} == {k: v for k, v in mb.items() if k not in ignore}


def test_shards_hold_the_maps_of_explain(tmp_path) -> None:
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[8, 16]).eval()
    data = NamedData("clutter", 7, 0)
    manifest = explain_dataset(model, data, tmp_path / "out", ats.Explainer(["gradcam", "saliency"], batch_size=2),
                               targets="label", streaming=Streaming(3))
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 1]
    images = torch.stack([data[i][0] for i in range(7)])
    labels = torch.tensor([data[i][1] for i in range(7)])
    whole = ats.explain(model, images, ["gradcam", "saliency"], targets=labels)
    shards = _shards(tmp_path / "out")
    for name in ("gradcam", "saliency"):
        got = torch.cat([shards[f"shard-{k:05d}.safetensors"][name] for k in range(3)])
        torch.testing.assert_close(got, whole[name].values, rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.cat([shards[f"shard-{k:05d}.safetensors"]["index"] for k in range(3)]), torch.arange(7))


def test_kill_9_then_resume_equals_an_uninterrupted_run(ckpt, tmp_path) -> None:
    slow = [*ARGS, "--option", "occlusion.batch_size=1"]  # slow enough to be killed between shards
    _run(["--checkpoint", ckpt, *slow, "--out", str(tmp_path / "whole")])
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "attnscope", "explain", "--checkpoint", ckpt, *slow, "--out", str(out), "--quiet"]
    kill_after_first_shard(cmd, out / "maps" / "shard-00000.safetensors")
    assert not (out / "manifest.json").exists()  # it was killed mid-run
    done = sorted(p.name for p in (out / "maps").iterdir() if not p.name.startswith("."))
    assert 1 <= len(done) < 4
    (out / "maps" / ".shard-00003.safetensors.abcd_123.tmp").write_bytes(b"half a shard")  # as a kill mid-write
    with pytest.raises(SystemExit) as e:  # not resumed by accident
        main(["explain", "--checkpoint", ckpt, *ARGS, "--out", str(out), "--quiet"])
    assert e.value.code == 2
    # only the same command resumes: its settings are checked against run.json
    with pytest.raises(SystemExit) as e:
        main(["explain", "--checkpoint", ckpt, *ARGS, "--out", str(out), "--quiet", "--resume"])
    assert e.value.code == 2  # options differ (occlusion.batch_size): refused, nothing changed
    assert sorted(p.name for p in (out / "maps").iterdir() if not p.name.startswith(".")) == done
    _run(["--checkpoint", ckpt, *slow, "--out", str(out), "--resume"])
    assert not list((out / "maps").glob(".*.tmp"))
    _same_output(out, tmp_path / "whole")
    assert json.loads((out / ".attnscope-output.json").read_text()).get("partial") is None


def test_resume_refusals(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    _run(["--checkpoint", ckpt, *ARGS, "--out", str(out)])
    for argv, needle in ((["--resume"], "is complete"), ([], "--overwrite")):
        with pytest.raises(SystemExit) as e:
            main(["explain", "--checkpoint", ckpt, *ARGS, "--out", str(out), "--quiet", *argv])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and needle in err and "\n" not in err, err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["explain", "--checkpoint", ckpt, *ARGS, "--out", str(foreign), "--quiet", "--resume"])
    assert "does not hold an interrupted" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_two_torchrun_processes_write_what_one_writes(ckpt, tmp_path) -> None:
    _run(["--checkpoint", ckpt, *ARGS, "--out", str(tmp_path / "one")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "attnscope",
           "--", "explain", "--checkpoint", ckpt, *ARGS, "--out", str(tmp_path / "two"), "--quiet"]
    # "--": without it torchrun's own parser reads attnscope's --n as an abbreviation of --nnodes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(ats.__file__).parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_output(tmp_path / "two", tmp_path / "one", ignore=("processes",))
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["processes"] == 2


@pytest.mark.parametrize("extra, needle", [
    (["--layer", "features.nosuch"], "nosuch"),
    (["--option", "occlusion.window=99"], "larger than the image"),
    (["--format", "npy"], "--format npy"),
])
def test_bad_settings_fail_before_anything_is_written(ckpt, tmp_path, capsys, extra, needle) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["explain", "--checkpoint", ckpt, *ARGS, *extra, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and "\n" not in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []
