"""`attnscope explain`: what it writes equals `attnscope.explain`; errors are one line, exit 2, nothing written."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

import attnscope as ats
from attnscope.cli import cli, main
from attnscope.models import checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ats.models.get("smallcnn", widths=[8, 16])
    return str(checkpoint.save(model, tmp_path_factory.mktemp("run") / "model.safetensors"))


@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("b", "a", "c"):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image; ignored")
    return folder


def invoke(args: list[str]):
    result = CliRunner().invoke(cli, ["explain", *args, "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_clutter_maps_equal_the_library(ckpt, tmp_path):
    out = tmp_path / "out"
    invoke(
        [
            "--checkpoint",
            ckpt,
            "--images",
            "clutter",
            "--n",
            "3",
            "--methods",
            "gradcam,ig,occlusion",
            "--option",
            "ig.steps=8",
            "--option",
            "occlusion.window=8",
            "--targets",
            "label",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ]
    )
    saved = load_file(str(out / "maps.safetensors"))
    model, _ = checkpoint.load(ckpt)
    data = ats.data.get("clutter", "test", 3, seed=0)
    x, labels = torch.stack([data[i].image for i in range(3)]), torch.tensor([data[i].label for i in range(3)])
    expected = ats.explain(
        model,
        x,
        ("gradcam", "ig", "occlusion"),
        targets=labels,
        options={"ig": {"steps": 8}, "occlusion": {"window": 8}},
    )
    for name, amap in expected.items():
        torch.testing.assert_close(saved[name], amap.values, rtol=1e-5, atol=1e-7)
        assert torch.equal(saved[f"{name}.targets"], labels)
    torch.testing.assert_close(saved["gradcam.lowres"], expected["gradcam"].lowres, rtol=1e-5, atol=1e-7)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods"]["gradcam"]["layer"] == "features"
    assert manifest["methods"]["ig"]["options"]["steps"] == 8
    assert [im["label"] for im in manifest["images"]] == labels.tolist()
    with torch.no_grad():
        assert [im["predicted"] for im in manifest["images"]] == model(x).argmax(1).tolist()
    assert len(manifest["files"]["overlays"]["ig"]) == 3
    for rel in manifest["files"]["overlays"]["ig"] + ["grid.png"]:
        with Image.open(out / rel) as im:
            assert im.size[0] >= 64
    assert not list(tmp_path.glob(".*partial"))


def test_image_folder_npy_and_class_target(ckpt, image_dir, tmp_path):
    out = tmp_path / "out"
    invoke(
        [
            "--checkpoint",
            ckpt,
            "--images",
            str(image_dir),
            "--methods",
            "saliency",
            "--targets",
            "2",
            "--format",
            "npy",
            "--out",
            str(out),
        ]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [im["name"] for im in manifest["images"]] == ["a", "b", "c"]
    values = np.load(out / "maps" / "saliency.npy")
    model, _ = checkpoint.load(ckpt)
    x, _ = ats.data.load_images(image_dir)
    np.testing.assert_allclose(
        values, ats.explain(model, x, "saliency", targets=2)["saliency"].values.numpy(), rtol=1e-5, atol=1e-8
    )
    assert np.load(out / "maps" / "saliency.targets.npy").tolist() == [2, 2, 2]
    assert (out / "overlays" / "saliency" / "0000_a.png").is_file()


def test_classes_by_name_in_targets_manifest_and_grid_rows(ckpt, tmp_path, monkeypatch, capsys):
    """--classes names the classes: --targets takes a name (a near miss is refused with the close ones), the
    manifest gives each image's classes by name with the model's probability, and the grid's rows say them."""
    from attnscope.report import figures
    from attnscope.report.labels import prob

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (tmp_path / "names.txt").write_text("\n".join(words) + "\n")
    drawn, grid = [], figures.grid
    monkeypatch.setattr(figures, "grid", lambda *a, **k: drawn.append(k["rows"]) or grid(*a, **k))
    out = tmp_path / "out"
    args = ["--checkpoint", ckpt, "--images", "clutter", "--n", "3", "--methods", "saliency", "--classes",
            str(tmp_path / "names.txt")]
    invoke([*args, "--targets", "Seven", "--out", str(out)])
    model, _ = checkpoint.load(ckpt)
    data = ats.data.get("clutter", "test", 3, seed=0)
    x, labels = torch.stack([data[i].image for i in range(3)]), [data[i].label for i in range(3)]
    with torch.no_grad():
        probs = model(x).softmax(1)
    images = json.loads((out / "manifest.json").read_text())["images"]
    assert [im["targets"]["saliency"] for im in images] == [7, 7, 7]
    assert [im["target_names"]["saliency"] for im in images] == ["seven"] * 3
    assert [im["label_name"] for im in images] == [words[y] for y in labels]
    assert [im["predicted_name"] for im in images] == [words[k] for k in probs.argmax(1).tolist()]
    assert [im["p_targets"]["saliency"] for im in images] == pytest.approx(probs[:, 7].tolist(), rel=1e-3)
    assert [r.splitlines()[1] for r in drawn[0]] == [f"explains seven (7) p {prob(float(p))}" for p in probs[:, 7]]
    truths = ["the true class" if y == 7 else f"true {words[y]} ({y})" for y in labels]
    assert all(truth in row for truth, row in zip(truths, drawn[0], strict=True))
    assert "did you mean 'seven'" in _error([*args, "--targets", "sevn", "--out", str(tmp_path / "o")], capsys)


def test_torchvision_name_with_local_weights(tmp_path, image_dir):
    torch.manual_seed(0)
    weights = tmp_path / "resnet.pth"
    torch.save(ats.models.get("resnet18", num_classes=4).state_dict(), weights)
    out = tmp_path / "out"
    invoke(
        [
            "--checkpoint",
            "resnet18",
            "--weights",
            str(weights),
            "--num-classes",
            "4",
            "--images",
            str(image_dir),
            "--size",
            "64",
            "--normalize",
            "imagenet",
            "--methods",
            "gradcam",
            "--out",
            str(out),
        ]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods"]["gradcam"]["layer"] == "layer4" and manifest["methods"]["gradcam"]["shape"] == [
        3,
        64,
        64,
    ]
    from attnscope.cli.options import parse_fit
    from attnscope.data.inputs import images_of, read_all

    model = ats.models.get("resnet18", num_classes=4)
    model.load_state_dict(torch.load(weights))
    x = read_all(images_of(str(image_dir), 16, 0, parse_fit(None, None, False, "64"))).images
    with torch.no_grad():  # --targets pred: the recorded predictions are the model's
        expected = ats.models.normalized(model.eval(), "imagenet")(x).argmax(1).tolist()
    assert [im["predicted"] for im in manifest["images"]] == expected


def test_overwrite_replaces_an_earlier_output_only(ckpt, tmp_path):
    out = tmp_path / "out"
    args = ["--checkpoint", ckpt, "--images", "clutter", "--n", "1", "--out", str(out)]
    invoke([*args, "--methods", "cam,gradcam"])
    assert (out / "overlays" / "gradcam").is_dir()
    invoke([*args, "--methods", "cam", "--overwrite"])  # the earlier output goes whole, gradcam's files too
    assert not (out / "overlays" / "gradcam").exists() and (out / "manifest.json").is_file()
    (out / "notes.txt").write_text("the user's, not explain's")
    result = CliRunner().invoke(cli, ["explain", *args, "--methods", "cam", "--overwrite", "--quiet"])
    assert result.exit_code != 0 and "notes.txt" in str(result.exception)
    assert (out / "notes.txt").read_text() == "the user's, not explain's" and (out / "manifest.json").is_file()


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(["explain", *argv, "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--checkpoint", "runs/missing/model.safetensors"], "checkpoint not found"),
        (["--checkpoint", "resnet19"], "Did you mean 'resnet18'"),
        (["--images", "no/such/folder"], "no such file or folder"),
        (["--methods", "gradcm"], "Did you mean 'gradcam'"),
        (["--option", "ig.steps=4"], "not among --methods"),
        (["--option", "gradcam.stepz=4"], "no option"),
        (["--option", "relu=true"], "METHOD.KEY=VALUE"),
        (["--targets", "dog"], "carries no class names"),
        (["--targets", "predictd"], "did you mean predicted"),
        (["--targets", "dog", "--classes", "digits"], "no class is called 'dog'"),
        (["--targets", "12"], "out of range"),
        (["--size", "0"], "--size"),
        (["--methods", "guided-backprop", "--checkpoint", "vit_b_16"], "does not apply"),
    ],
)
def test_errors_exit_2_with_one_line(ckpt, tmp_path, capsys, args, needle):
    base = {
        "--checkpoint": ckpt,
        "--images": "clutter",
        "--n": "2",
        "--methods": "gradcam",
        "--out": str(tmp_path / "o"),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [str(v) for kv in base.items() for v in kv]
    if "--option" in args:
        argv += ["--option", args[args.index("--option") + 1]]
        argv = argv[: argv.index("--option")] + argv[argv.index("--option") + 2 :] + argv[-2:]
    assert needle in _error(argv, capsys)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".*partial"))


def test_bad_image_inputs(ckpt, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert "no images in" in _error(
        ["--checkpoint", ckpt, "--images", str(empty), "--out", str(tmp_path / "o")], capsys
    )
    fake = tmp_path / "fake.png"
    fake.write_text("not a png")
    assert "cannot read image" in _error(
        ["--checkpoint", ckpt, "--images", str(fake), "--out", str(tmp_path / "o")], capsys
    )
    real = tmp_path / "real.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(real)
    assert "no labels" in _error(
        ["--checkpoint", ckpt, "--images", str(real), "--targets", "label", "--out", str(tmp_path / "o")], capsys
    )


def test_refuses_to_replace_a_foreign_folder(ckpt, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    args = ["--checkpoint", ckpt, "--images", "clutter", "--n", "1", "--out", str(out)]
    assert "--overwrite" in _error(args, capsys)
    assert "refusing" in _error([*args, "--overwrite"], capsys)
    assert (out / "thesis.tex").read_text() == "precious"


def test_a_failure_while_writing_leaves_nothing(ckpt, tmp_path, monkeypatch):
    from attnscope.report import figures

    calls = []

    def failing_png(path, rgb):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(figures, "save_png", failing_png)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        CliRunner().invoke(
            cli,
            ["explain", "--checkpoint", ckpt, "--images", "clutter", "--n", "2", "--out", str(out), "--quiet"],
            catch_exceptions=False,
        )
    assert not out.exists() and list(tmp_path.iterdir()) == []
