"""One command-line vocabulary: the shared option groups reach every command that needs them, renamed options
keep their old spelling as hidden aliases with the same meaning, `--targets` has one parser; `interventions`
and `report` follow the output-folder rules (issue 26, items 3-4; issue 27, items 3 and 6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import attnscope as ats
from attnscope.cli import cli, main
from attnscope.errors import InputError
from attnscope.models import checkpoint

COMPUTING = ("train", "demo", "explain", "sanity", "bench", "interventions", "caption")
WRITING = (*COMPUTING, "report")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[4, 8])
    return str(checkpoint.save(model, tmp_path_factory.mktemp("run") / "model.safetensors", {"data": "clutter"}))


def _options(command: str) -> dict[str, object]:
    return {opt: p for p in cli.commands[command].params for opt in getattr(p, "opts", [])}


def _fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


# -- the vocabulary ----------------------------------------------------------------------------------------------


def test_every_computing_command_has_the_common_flags_and_every_writing_command_the_output_ones():
    for command in COMPUTING:
        assert {"--device", "--threads", "--quiet"} <= set(_options(command)), command
    for command in WRITING:
        assert {"--out", "--overwrite"} <= set(_options(command)), command
    for command in ("explain", "bench", "sanity", "interventions", "train"):  # one explain group everywhere
        assert {"--layer", "--method-opt", "--targets", "--explain-batch"} <= set(_options(command)), command
    for command in ("explain", "bench", "sanity"):
        assert {"--checkpoint", "--model", "--weights", "--model-opt", "--stream", "--resume"} <= set(
            _options(command)), command


def test_old_spellings_are_hidden_and_batch_sizes_have_distinct_names():
    hidden = {opt for command in cli.commands for opt, p in _options(command).items() if getattr(p, "hidden", False)}
    assert {"--option", "--batch-size"} <= hidden
    assert "--batch-size" in _options("train") and not _options("train")["--batch-size"].hidden  # the training batch
    assert "--forward-batch" in _options("bench") and "--explain-batch" in _options("sanity")


def test_one_targets_parser():
    from attnscope.explain.targets import choice_targets, parse_targets

    assert parse_targets("pred") == parse_targets("predicted") == "predicted"
    assert parse_targets("label") == "label" and parse_targets("7") == 7
    assert parse_targets("cat", classes=["dog", "cat"]) == 1  # names, once a model has them
    assert parse_targets("Egyptian cat") == "Egyptian cat"  # a name before the model is known: `named_choice`
    for bad in ("predictd", "-1", "1.5"):
        with pytest.raises(InputError, match="--targets must be predicted"):
            parse_targets(bad)
    labels = torch.tensor([3, 1])
    assert choice_targets("predicted", labels) is None and choice_targets(4, labels) == 4
    assert torch.equal(choice_targets("label", labels), labels)
    with pytest.raises(InputError, match="needs a built-in data set"):
        choice_targets("label", torch.tensor([-1, -1]))


def test_hidden_aliases_mean_what_they_meant(ckpt, tmp_path):
    common = ["explain", "--checkpoint", ckpt, "--images", "clutter", "--n", "3", "--methods", "gradcam,ig",
              "--targets", "pred", "--quiet"]
    main([*common, "--option", "ig.steps=4", "--batch-size", "2", "--out", str(tmp_path / "old")])
    main([*common, "--method-opt", "ig.steps=4", "--explain-batch", "2", "--out", str(tmp_path / "new")])
    old, new = (load_file(tmp_path / p / "maps.safetensors") for p in ("old", "new"))
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    manifests = [json.loads((tmp_path / p / "manifest.json").read_text()) for p in ("old", "new")]
    assert manifests[0]["methods"] == manifests[1]["methods"]
    assert manifests[0]["methods"]["ig"]["options"]["steps"] == 4


def test_a_method_option_for_a_method_not_run_is_refused_by_every_command(ckpt, tmp_path, capsys):
    for command in ("explain", "sanity", "bench", "interventions"):
        argv = [command, "--checkpoint", ckpt, "--methods", "saliency", "--method-opt", "ig.steps=-1",
                "--out", str(tmp_path / command), "--quiet"]
        argv += ["--images", "clutter"] if command == "explain" else []
        assert "'ig' is not among --methods" in _fails(argv, capsys)
        assert not (tmp_path / command).exists()


def test_threads_default_follows_the_load_and_says_so(monkeypatch, capsys):
    from attnscope.cli.common import use_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    before = torch.get_num_threads()
    try:
        use_threads(None, quiet=False)
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # idle OpenMP threads sleep on a busy machine
        assert "using 1 of" in capsys.readouterr().err
        with pytest.raises(InputError, match="--threads must be >= 1"):
            use_threads(0, quiet=True)
    finally:
        torch.set_num_threads(before)
        os.environ.pop("OMP_WAIT_POLICY", None)


# -- interventions under the output-folder rules -----------------------------------------------------------------


def _interventions(ckpt: str, out: Path | str, *extra: str) -> list[str]:
    return ["interventions", "--checkpoint", ckpt, "--out", str(out), "--images", "2", "--methods", "saliency",
            "--quiet", *extra]


def test_interventions_never_replaces_what_it_did_not_write(ckpt, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "interventions.json").write_text("my own notes")
    assert "not empty" in _fails(_interventions(ckpt, mine), capsys)
    assert "does not hold an `attnscope interventions` output" in _fails(_interventions(ckpt, mine, "--overwrite"),
                                                                         capsys)
    assert (mine / "interventions.json").read_text() == "my own notes" and len(list(mine.iterdir())) == 1
    (tmp_path / "file").write_text("x")
    assert "not a folder" in _fails(_interventions(ckpt, tmp_path / "file"), capsys)
    (tmp_path / "link").symlink_to(mine)
    assert "symbolic link" in _fails(_interventions(ckpt, tmp_path / "link"), capsys)
    os.chdir(mine)
    try:
        assert "current folder" in _fails(_interventions(ckpt, "."), capsys)
    finally:
        os.chdir(tmp_path)
    assert len(list(mine.iterdir())) == 1


def test_interventions_writes_a_marked_output_and_replaces_it_only_with_overwrite(ckpt, tmp_path, capsys):
    out = tmp_path / "int"
    main(_interventions(ckpt, out))
    marker = json.loads((out / ".attnscope-output.json").read_text())
    assert marker["command"] == "interventions" and marker["files"] == ["interventions.csv", "interventions.json"]
    first = (out / "interventions.json").read_text()
    assert "pass --overwrite" in _fails(_interventions(ckpt, out), capsys)
    main(_interventions(ckpt, out, "--overwrite"))
    assert (out / "interventions.json").read_text() == first  # the same scenes, seeds and maps
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock or partial folder left


# -- report under the output-folder rules ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from tiny_runs import TINY_ARGS

    out = tmp_path_factory.mktemp("report") / "run"
    main(["train", "--out", str(out), "--epochs", "1", *TINY_ARGS])
    return out


def test_report_never_replaces_a_file_it_did_not_write(run_dir, tmp_path, capsys):
    user = tmp_path / "user.html"
    user.write_text("<html>my page</html>")
    for extra in ([], ["--overwrite"]):
        assert "was not written by `attnscope report`" in _fails(["report", str(run_dir), "--out", str(user),
                                                                   *extra], capsys)
    assert user.read_text() == "<html>my page</html>"
    assert "is a folder" in _fails(["report", str(run_dir), "--out", str(tmp_path)], capsys)
    (tmp_path / "link.html").symlink_to(user)
    assert "symbolic link" in _fails(["report", str(run_dir), "--out", str(tmp_path / "link.html")], capsys)
    assert user.read_text() == "<html>my page</html>"


def test_report_replaces_its_own_page_with_overwrite(run_dir, tmp_path, capsys):
    page = tmp_path / "r.html"
    main(["report", str(run_dir), "--out", str(page)])
    assert "pass --overwrite" in _fails(["report", str(run_dir), "--out", str(page)], capsys)
    main(["report", str(run_dir), "--out", str(page), "--overwrite", "--images", "2"])
    main(["report", str(run_dir)])  # into the run: part of the train output, as before
    main(["report", str(run_dir), "--overwrite"])
    assert (run_dir / "report.html").is_file()


def test_a_missing_required_option_is_one_line_for_every_command(tmp_path, monkeypatch, capsys):
    """click >= 8.3 reads an explicit default=None as given, so `required` went unenforced and a missing --out
    reached the body as None (a TypeError traceback, found by bench/fuzz_cli.py): every required option of every
    command is refused by name, exit 2, before any work."""
    import click

    monkeypatch.chdir(tmp_path)
    checked = 0
    for name, command in cli.commands.items():
        for param in command.params:
            if not (isinstance(param, click.Option) and param.required):
                continue
            others = [opt for p in command.params if isinstance(p, click.Option) and p.required and p is not param
                      for opt in (p.opts[0], "x")]
            err = _fails([name, *others], capsys)
            assert err.startswith("error: Missing option") and param.opts[0] in err, (name, err)
            checked += 1
    assert checked >= 11 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["bench", "interventions"])
def test_commands_that_score_the_images_own_class_refuse_a_class_name_and_point_to_explain(command, ckpt, tmp_path,
                                                                                          capsys):
    """bench's columns and interventions' parts are the image's own object: a fixed class would be scored against
    another class's box. Both refuse it in one line, before any work, and say where a named class is explained."""
    argv = [command, "--checkpoint", ckpt, "--targets", "Egyptian cat", "--out", str(tmp_path / command)]
    err = _fails(argv, capsys)
    assert "(label)" in err and "(predicted)" in err and "attnscope explain --targets NAME" in err
    assert not (tmp_path / command).exists()
