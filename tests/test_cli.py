"""The command line: errors are one line with exit status 2; train and demo write what they say."""

import json

import pytest

from attnscope.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--model", "resnet19"], "Did you mean 'resnet18'"),
        (["train", "--data", "clutterr"], "Known: clutter"),
        (["train", "--epochs", "0"], "epochs must be >= 1"),
        (["train", "--model-opt", "widths"], "key=value"),
        (["train", "--resume", "--out", "/nonexistent/run"], "no run to resume"),
        (["train", "--no-such-flag"], "No such option"),
        (["train", "--guide", "rrr", "--guide-region", "decoy"], "Did you mean 'not-decoy'"),
    ],
)
def test_errors_exit_2_with_one_readable_line(argv, needle, capsys):
    code, out = _run(argv, capsys)
    assert code == 2
    assert needle in out.err
    assert "Traceback" not in out.err


def test_a_guide_region_the_data_lacks_fails_before_anything_is_written(tmp_path, capsys):
    code, out = _run(["train", "--out", str(tmp_path / "run"), "--data", "clutter", "--guide", "rrr",
                      "--guide-region", "not-decoy", "--quiet"], capsys)
    assert code == 2 and "needs data with a decoy patch" in out.err
    assert not (tmp_path / "run").exists()


def test_train_list(capsys):
    main(["train", "--list"])
    out = capsys.readouterr().out
    assert "smallcnn" in out and "clutter" in out


def test_train_writes_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--out", str(out), "--n", "64", "--n-test", "32", "--epochs", "1", "--batch-size", "32", "--quiet",
          "--model-opt", "widths=[8,16]", "--data-opt", "size=32", "--data-opt", "digit_size=[12,16]"])
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and 0 <= record["test_acc"] <= 1
    assert json.loads((out / "config.json").read_text())["model_cfg"] == {"widths": [8, 16]}


@pytest.mark.slow
def test_demo_writes_its_folder_and_replaces_only_its_own_with_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    # --no-photos: the pretrained-photo part is tested on its own (tests/test_demo_photos.py)
    argv = ["demo", "--out", str(out), "--epochs", "1", "--n", "128", "--probe", "4", "--no-photos", "--quiet"]
    main(argv)
    summary = json.loads((out / "summary.json").read_text())
    assert {"cam", "gradcam", "saliency", "random"} <= set(summary["methods"])
    for scores in summary["methods"].values():
        assert 0 <= scores["pointing"] <= 1 and 0 <= scores["energy_in_box"] <= 1
    import torch
    from safetensors.torch import load_file

    from attnscope.models import checkpoint

    probe = load_file(str(out / "probe.safetensors"))
    model = checkpoint.load(out)[0].eval()
    with torch.no_grad():
        p = model(probe["images"][:8]).softmax(1)
    names = getattr(model, "class_names", None)
    said = lambda k: f"{names[k]} ({k})" if names else f"class {k}"  # noqa: E731
    share = lambda q: f"{q:.2f}" if q >= 0.01 else f"{q:.2g}" if q >= 1e-4 else "<0.0001"  # noqa: E731
    for i, row in enumerate(summary["grid_rows"]):  # grid.png says which image, class and probability each row is
        truth, top = int(probe["labels"][i]), int(p[i].argmax())
        wrong = "" if top == truth else f" · predicted {said(top)} p {share(float(p[i, top]))}"
        assert row.split("\n") == [f"test image {i}", f"explains {said(truth)} p {share(float(p[i, truth]))}",
                                    "the true class" + wrong]
    for name in ("grid.png", "summary.md", "model.safetensors", "maps.safetensors", "probe.safetensors"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["out"] == str(out)
    page = (out / "report.html").read_text()
    assert f"<td>{out}</td>" in page and ".partial" not in page  # the configuration names the final folder
    code, err = _run(argv, capsys)  # an earlier demo is replaced only when asked to
    assert code == 2 and "--overwrite" in err.err
    before = (out / "summary.json").stat().st_ino
    main([*argv, "--overwrite"])
    assert (out / "summary.json").stat().st_ino != before and (out / "report.html").is_file()
    (out / "notes.txt").write_text("the user's")
    code, err = _run([*argv, "--overwrite"], capsys)  # ... and never with a file demo did not write
    assert code == 2 and "notes.txt" in err.err and (out / "notes.txt").read_text() == "the user's"
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".*.lock"))
