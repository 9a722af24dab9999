"""Census of bad inputs and faults: does each give one readable line (CLI: exit 2) or a typed error (library),
and leave nothing written?

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/faults_census.py [--only TEXT] [--skip TEXT] [--json OUT]

Every case runs in a fresh folder as the working directory, in-process (`python -m attnscope`, through runpy), with the
fixtures it needs built once (a tiny trained run, an untrained captioner, corrupt files). A CLI case passes
when it exits with status 2, prints exactly one non-empty line on stderr and no traceback, and neither its
folder nor the fixtures changed (a case marked `accept`, input the command should take, when it exits 0
without a traceback: a NaN learning rate in `metrics.jsonl` is a gap in the report's chart). A library
case passes when it raises an `AttnscopeError` subclass. Each case names the part of the code whose
behaviour it checks (`owner`), so cases of work in progress elsewhere are counted apart. Python warnings
are silenced (in-process they would show once per location only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TINY_TRAIN = ["--n", "64", "--n-test", "32", "--epochs", "1", "--batch-size", "32", "--quiet",
              "--model-opt", "widths=[4,8]", "--data-opt", "size=32", "--data-opt", "digit_size=[10,16]"]
RESUME = [*TINY_TRAIN[:4], "--epochs", "2", *TINY_TRAIN[6:], "--resume"]


@dataclass
class Case:
    name: str
    owner: str  # the area whose code decides the outcome: h18 (CLI, outputs, train, data), lead, h17, h15
    argv: Callable[[Path, dict[str, Path]], list[str]] | None = None  # CLI case: argv from (cwd, fixtures)
    call: Callable[[Path, dict[str, Path]], Any] | None = None  # library case
    setup: Callable[[Path, dict[str, Path]], None] = lambda cwd, fx: None
    pending: bool = False  # fails today because the owner's rewrite has not landed yet
    accept: bool = False  # input the command should take (exit 0, no traceback), not refuse


@dataclass
class Outcome:
    case: str
    owner: str
    kind: str  # "cli" | "library"
    ok: bool
    detail: str
    wrote: list[str] = field(default_factory=list)


# -- fixtures ------------------------------------------------------------------------------------------


def build_fixtures(root: Path) -> dict[str, Path]:
    """A tiny trained run, an untrained captioner, corrupt checkpoints and data files (seconds on a CPU)."""
    import torch
    from safetensors.torch import save_file

    from attnscope import data, models
    from attnscope.models import checkpoint

    fx: dict[str, Path] = {}
    fx["run"] = root / "run"
    with contextlib.redirect_stderr(io.StringIO()):
        main_quietly(attnscope, ["train", "--out", str(fx["run"]), *TINY_TRAIN])
    vocab = data.get("scenes", "train", 16).vocabulary()
    fx["sat"] = root / "sat.safetensors"
    checkpoint.save(models.get("sat", vocab=vocab.to_json(), encoder_widths=[8, 16], hidden_dim=32, max_len=8),
                    fx["sat"])
    weights = {k: v for k, v in models.get("smallcnn", widths=[4, 8]).state_dict().items()}
    spec = {"name": "smallcnn", "config": {"widths": [4, 8]}}
    for name, header in {
        "header_list": [],
        "config_list": {"format": checkpoint.FORMAT, "model": {"name": "smallcnn", "config": [4, 8]}},
        "config_null": {"format": checkpoint.FORMAT, "model": {"name": "smallcnn", "config": None}},
        "widths_negative": {"format": checkpoint.FORMAT, "model": {"name": "smallcnn", "config": {"widths": [-1]}}},
        "dropout_2": {"format": checkpoint.FORMAT, "model": {**spec, "config": {"widths": [4, 8], "dropout": 2}}},
        "info_list": {"format": checkpoint.FORMAT, "model": spec, "info": []},
    }.items():
        fx[name] = root / f"{name}.safetensors"
        save_file(weights, str(fx[name]), metadata={"attnscope": json.dumps(header)})
    fx["header_not_json"] = root / "header_not_json.safetensors"
    save_file(weights, str(fx["header_not_json"]), metadata={"attnscope": "{not json"})
    fx["garbage"] = root / "garbage.safetensors"
    fx["garbage"].write_bytes(b"\x00" * 64)
    fx["pickled"] = root / "pickled.pth"
    torch.save({"state_dict": {}, "optimizer": argparse.Namespace(lr=1)}, fx["pickled"])
    fx["not_torch"] = root / "not_torch.pth"
    fx["not_torch"].write_text("hello")
    fx["fifo"] = root / "images.fifo"
    os.mkfifo(fx["fifo"])
    fx["png"] = root / "one.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (120, 30, 200)).save(fx["png"])
    fx["png1x1"] = root / "tiny.png"
    Image.new("RGB", (1, 1), (120, 30, 200)).save(fx["png1x1"])
    return fx


def attnscope(argv: list[str]) -> None:
    """`python -m attnscope ARGV` in this process: the command's own door (`attnscope/__main__.py`)."""
    import runpy

    saved = sys.argv
    sys.argv = ["attnscope", *argv]
    try:
        runpy.run_module("attnscope", run_name="__main__")
    finally:
        sys.argv = saved


def main_quietly(main: Callable[[list[str]], None], argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


# -- case helpers ----------------------------------------------------------------------------------------


def copy_run(cwd: Path, fx: dict[str, Path]) -> Path:
    target = cwd / "run"
    shutil.copytree(fx["run"], target)
    return target


def edit_state(change: Callable[[dict[str, Any], dict[str, Any]], None]) -> Callable[[Path, dict[str, Path]], None]:
    """Setup: copy the run, then rewrite its epoch-1 training state with `change(header, tensors)`."""

    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        path = copy_run(cwd, fx) / "checkpoints" / "epoch_001.safetensors"
        with safe_open(str(path), framework="pt") as f:
            header = json.loads(f.metadata()["attnscope"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        change(header, tensors)
        save_file(tensors, str(path), metadata={"attnscope": json.dumps(header)})

    return setup


def write(rel: str, text: str, copy: bool = True) -> Callable[[Path, dict[str, Path]], None]:
    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        base = copy_run(cwd, fx) if copy else cwd
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)

    return setup


def user_folder(cwd: Path, fx: dict[str, Path]) -> None:
    (cwd / "mine").mkdir()
    (cwd / "mine" / "thesis.tex").write_text("precious")
    (cwd / "mine" / "figures").mkdir()
    (cwd / "mine" / "figures" / "a.png").write_bytes(b"png")


def karpathy(filename: Callable[[Path], str], filepath: str | None = None) -> Callable[[Path, dict[str, Path]], None]:
    """Setup: a Karpathy-split file whose one image entry names `filename(cwd)`; a real image lies outside `imgs/`."""

    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        (cwd / "imgs" / "sub").mkdir(parents=True)
        shutil.copy(fx["png"], cwd / "imgs" / "a.png")
        shutil.copy(fx["png"], cwd / "outside.png")
        entry = {"filename": filename(cwd), "split": "train", "sentences": [{"tokens": ["a", "red", "digit"]}]}
        if filepath is not None:
            entry["filepath"] = filepath
        (cwd / "caps.json").write_text(json.dumps({"images": [entry]}))

    return setup


EXPLAIN = lambda fx, *more: ["explain", "--checkpoint", str(fx["run"]), "--images", "clutter", "--n", "2",  # noqa: E731
                             "--quiet", *more]
SANITY = lambda ckpt, *more: ["sanity", "--checkpoint", str(ckpt), "--images", "2", "--methods", "saliency",  # noqa: E731
                              "--quiet", *more]
CAPTION = lambda fx, *more: ["caption", "--checkpoint", str(fx["sat"]), "--images", "scenes", "--n", "2",  # noqa: E731
                             "--quiet", *more]
TRAIN = lambda *more: ["train", *TINY_TRAIN, *more]  # noqa: E731


def hold_lock(rel: str) -> Callable[[Path, dict[str, Path]], None]:
    """Setup: another writer holds the lock of `rel` (this process, through a second open file: flock conflicts)."""

    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        from attnscope import outdir

        held = outdir.lock(cwd / rel)
        held.__enter__()
        HELD.append(held)

    return setup


HELD: list[Any] = []


def cases() -> list[Case]:
    out = lambda cwd, name="o": str(cwd / name)  # noqa: E731
    c = Case
    return [
        # --out rules (issue 18, item 1), locks (4), symlinks and files (environment)
        c("demo --out a user's folder", "h18", lambda w, fx: ["demo", "--out", out(w, "mine"), "--epochs", "1",
          "--n", "64", "--probe", "2", "--quiet"], setup=user_folder),
        c("demo --out . (the working folder)", "h18",
          lambda w, fx: ["demo", "--out", ".", "--epochs", "1", "--n", "64", "--probe", "2", "--quiet"],
          setup=lambda w, fx: (w / "notes.txt").write_text("mine")),
        c("explain --out a user's folder", "h18", lambda w, fx: EXPLAIN(fx, "--out", out(w, "mine")),
          setup=user_folder),
        c("explain --out a user's folder --overwrite", "h18",
          lambda w, fx: EXPLAIN(fx, "--out", out(w, "mine"), "--overwrite"), setup=user_folder),
        c("explain --out . --overwrite (cwd is an earlier output)", "h18",
          lambda w, fx: [*EXPLAIN(fx, "--out", ".", "--overwrite")], setup=lambda w, fx: earlier_explain(w, fx)),
        c("explain --out a symlink to a folder", "h18", lambda w, fx: EXPLAIN(fx, "--out", out(w, "link")),
          setup=lambda w, fx: ((w / "real").mkdir(), (w / "link").symlink_to(w / "real"))),
        c("explain --out FILE/sub", "h18", lambda w, fx: EXPLAIN(fx, "--out", str(w / "file.txt" / "sub")),
          setup=lambda w, fx: (w / "file.txt").write_text("x")),
        c("explain --out an existing file", "h18", lambda w, fx: EXPLAIN(fx, "--out", str(w / "file.txt")),
          setup=lambda w, fx: (w / "file.txt").write_text("x")),
        c("explain --out locked by another writer", "h18", lambda w, fx: EXPLAIN(fx, "--out", out(w)),
          setup=hold_lock("o")),
        c("sanity --out a user's folder", "h18", lambda w, fx: SANITY(fx["run"], "--out", out(w, "mine")),
          setup=user_folder),
        c("bench --out a user's folder", "h18", lambda w, fx: ["bench", "--checkpoint", str(fx["run"]), "--out",
          out(w, "mine"), "--images", "2", "--methods", "saliency", "--quiet"], setup=user_folder),
        c("caption --out a user's folder", "h18", lambda w, fx: CAPTION(fx, "--out", out(w, "mine")),
          setup=user_folder),
        c("train --out a user's folder", "h18", lambda w, fx: TRAIN("--out", out(w, "mine")), setup=user_folder),
        c("train --out a user's folder --overwrite", "h18", lambda w, fx: TRAIN("--out", out(w, "mine"),
          "--overwrite"), setup=user_folder),
        c("train --resume --overwrite", "h18", lambda w, fx: ["train", *RESUME, "--out", str(w / "run"),
          "--overwrite"], setup=lambda w, fx: copy_run(w, fx)),
        c("train --out locked by another writer", "h18", lambda w, fx: TRAIN("--out", out(w)), setup=hold_lock("o")),
        # corrupt checkpoints and configs
        *[c(f"explain --checkpoint with {k.replace('_', ' ')}", "h18",
            lambda w, fx, k=k: ["explain", "--checkpoint", str(fx[k]), "--images", "clutter", "--n", "1", "--out",
                                out(w), "--quiet"])
          for k in ("header_list", "config_list", "config_null", "widths_negative", "dropout_2", "info_list",
                    "header_not_json", "garbage")],
        c("sanity: run config.json is not JSON", "h18", lambda w, fx: SANITY(w / "run", "--out", out(w)),
          setup=write("config.json", "{not json")),
        c("sanity: run config.json is a list", "h18", lambda w, fx: SANITY(w / "run", "--out", out(w)),
          setup=write("config.json", "[1, 2]")),
        c("bench: run config.json data_seed is text", "h18", lambda w, fx: ["bench", "--checkpoint", str(w / "run"),
          "--out", out(w), "--images", "2", "--quiet"], setup=write("config.json", '{"data_seed": "x"}')),
        c("report: run config.json is not JSON", "h17", lambda w, fx: ["report", str(w / "run"), "--out",
          str(w / "r.html")], setup=write("config.json", "{not json")),
        c("report: NaN learning rate in metrics.jsonl", "h17", lambda w, fx: ["report", str(w / "run"), "--out",
          str(w / "r.html")], setup=write("metrics.jsonl", '{"epoch": 1, "step": 2, "lr": NaN, "train_loss": 1}\n'),
          accept=True),  # a NaN is a gap in the chart, not a reason to refuse the run
        c("report: tracker index names a file outside", "h18", lambda w, fx: ["report", str(w / "run"), "--out",
          str(w / "r.html")], setup=write("track/index.json", json.dumps({"format": "attnscope-track/1",
          "settings": {}, "probe": {}, "snapshots": [{"step": 0, "file": "../../../etc/passwd", "maps": []}]}))),
        c("train --resume: state lacks optim_scalars", "h18", lambda w, fx: ["train", *RESUME, "--out", str(w / "run")],
          setup=edit_state(lambda h, t: h.pop("optim_scalars"))),
        c("train --resume: state epoch is \"one\"", "h18", lambda w, fx: ["train", *RESUME, "--out", str(w / "run")],
          setup=edit_state(lambda h, t: h.update(epoch="one"))),
        c("train --resume: state epoch is 10**9", "h18", lambda w, fx: ["train", *RESUME, "--out", str(w / "run")],
          setup=edit_state(lambda h, t: h.update(epoch=10**9))),
        c("train --resume: a model tensor is missing", "h18", lambda w, fx: ["train", *RESUME, "--out",
          str(w / "run")], setup=edit_state(lambda h, t: t.pop(next(k for k in t if k.startswith("model."))))),
        c("train --resume: an optimizer tensor is missing", "h18", lambda w, fx: ["train", *RESUME, "--out",
          str(w / "run")], setup=edit_state(lambda h, t: t.pop(next(k for k in t if k.startswith("optim."))))),
        c("train --resume: state config has lr \"fast\"", "h18", lambda w, fx: ["train", *RESUME, "--out",
          str(w / "run")], setup=edit_state(lambda h, t: h["config"].update(lr="fast"))),
        c("train --resume: metrics.jsonl holds garbage", "h18", lambda w, fx: ["train", *RESUME, "--out",
          str(w / "run")], setup=write("metrics.jsonl", "garbage\n")),
        c("train --resume: no run there", "h18", lambda w, fx: ["train", *RESUME, "--out", str(w / "none")]),
        # unchecked numbers
        *[c(f"train {flag} {value}", "h18", lambda w, fx, flag=flag, value=value: TRAIN(flag, value, "--out", out(w),
            *(["--optimizer", "sgd"] if flag == "--momentum" else [])))
          for flag, value in (("--momentum", "-1"), ("--weight-decay", "-1"), ("--workers", "-1"), ("--lr", "inf"),
                              ("--lr", "nan"), ("--lr", "0"), ("--batch-size", "0"), ("--n", "0"), ("--epochs", "-3"),
                              ("--gamma", "0"), ("--guide-weight", "-1"), ("--guide-weight", "inf"))],
        c("train --track gradcam --probe 100000", "h18", lambda w, fx: TRAIN("--track", "gradcam", "--probe", "100000",
          "--out", out(w))),
        c("train --track ltpa on smallcnn", "h18", lambda w, fx: TRAIN("--track", "ltpa", "--probe", "8", "--out",
          out(w))),
        c("train --guide ltpa on smallcnn", "h18", lambda w, fx: TRAIN("--guide", "ltpa", "--out", out(w))),
        c("train --task-opt unknown=1", "h18", lambda w, fx: TRAIN("--task-opt", "unknown=1", "--out", out(w))),
        c("train --model-opt widths=[-1]", "h18", lambda w, fx: TRAIN("--model-opt", "widths=[-1]", "--out", out(w))),
        c("train --model-opt dropout=2", "h18", lambda w, fx: TRAIN("--model-opt", "dropout=2", "--out", out(w))),
        c("explain --num-classes 0", "h18", lambda w, fx: ["explain", "--checkpoint", "resnet18", "--num-classes", "0",
          "--images", str(fx["png"]), "--out", out(w), "--quiet"]),
        *[c(f"explain {flag} {value}", "h18", lambda w, fx, flag=flag, value=value: EXPLAIN(fx, flag, value, "--out",
            out(w)))
          for flag, value in (("--batch-size", "0"), ("--n", "0"), ("--size", "20000"), ("--size", "0"),
                              ("--size", "a,b"), ("--targets", "dog"))],
        *[c(f"caption {flag} {value}", "h18", lambda w, fx, flag=flag, value=value: CAPTION(fx, flag, value, "--out",
            out(w)))
          for flag, value in (("--beam-size", "100000"), ("--beam-size", "0"), ("--max-len", "100000"),
                              ("--n", "0"), ("--batch-size", "0"))],
        *[c(f"sanity {flag} {value}", "h18", lambda w, fx, flag=flag, value=value: SANITY(fx["run"], flag, value,
            "--out", out(w)))
          for flag, value in (("--keep", "-1"), ("--images", "0"), ("--batch-size", "0"), ("--target-acc", "2"),
                              ("--test", "bottom-up"), ("--methods", "gradcm"))],
        *[c(f"bench {flag} {value}", "h18", lambda w, fx, flag=flag, value=value: ["bench", "--checkpoint",
            str(fx["run"]), "--out", out(w), "--quiet", flag, value])
          for flag, value in (("--images", "0"), ("--batch-size", "0"), ("--step", "0"), ("--tolerance", "-1"))],
        c("report --images 0", "h18", lambda w, fx: ["report", str(fx["run"]), "--out", str(w / "r.html"),
          "--images", "0"]),
        *[c(f"demo {flag} {value}", "h18", lambda w, fx, flag=flag, value=value: ["demo", "--out", out(w), flag, value,
            "--quiet"])
          for flag, value in (("--probe", "0"), ("--probe", "100000"), ("--threads", "0"), ("--epochs", "0"))],
        # inputs
        c("explain --images a FIFO", "h18", lambda w, fx: EXPLAIN(fx, "--images", str(fx["fifo"]), "--out", out(w))),
        c("explain --images /dev/zero", "h18", lambda w, fx: EXPLAIN(fx, "--images", "/dev/zero", "--out", out(w))),
        c("caption --images a FIFO", "h18", lambda w, fx: CAPTION(fx, "--images", str(fx["fifo"]), "--out", out(w))),
        c("train --data karpathy json=DIR", "h18", lambda w, fx: ["train", "--model", "sat", "--data", "karpathy",
          "--data-opt", f"json={w}", "--data-opt", f"images={w}", "--out", out(w), "--quiet"]),
        c("caption karpathy: an absolute filename", "h18", lambda w, fx: karpathy_caption(w, fx),
          setup=karpathy(lambda w: str(w / "outside.png"))),
        c("caption karpathy: filename ../outside.png", "h18", lambda w, fx: karpathy_caption(w, fx),
          setup=karpathy(lambda w: "../outside.png")),
        c("caption karpathy: filepath sub/../..", "h18", lambda w, fx: karpathy_caption(w, fx),
          setup=karpathy(lambda w: "outside.png", "sub/../..")),
        c("explain --weights with a pickled object", "h18", lambda w, fx: ["explain", "--checkpoint", "resnet18",
          "--weights", str(fx["pickled"]), "--images", str(fx["png"]), "--out", out(w), "--quiet"]),
        c("explain --weights not a torch file", "h18", lambda w, fx: ["explain", "--checkpoint", "resnet18",
          "--weights", str(fx["not_torch"]), "--images", str(fx["png"]), "--out", out(w), "--quiet"]),
        c("explain --layer fc", "lead", lambda w, fx: EXPLAIN(fx, "--layer", "fc", "--out", out(w))),
        c("explain --layer dropout", "lead", lambda w, fx: EXPLAIN(fx, "--layer", "dropout", "--out", out(w))),
        c("explain a 1×1 image with gradcam", "lead", lambda w, fx: ["explain", "--checkpoint", str(fx["run"]),
          "--images", str(fx["png1x1"]), "--out", out(w), "--quiet"]),
        c("explain --targets 2**70", "lead", lambda w, fx: EXPLAIN(fx, "--targets", str(2**70), "--out", out(w))),
        c("explain --methods ig --option ig.steps=10**12", "lead", lambda w, fx: EXPLAIN(fx, "--methods", "ig",
          "--option", f"ig.steps={10**12}", "--out", out(w))),
        # usage errors
        c("train --no-such-flag", "h18", lambda w, fx: ["train", "--no-such-flag"]),
        c("train --epochs x", "h18", lambda w, fx: ["train", "--epochs", "x"]),
        c("explain without --checkpoint", "h18", lambda w, fx: ["explain", "--images", "clutter", "--out", out(w)]),
        c("attnscope nosuchcommand", "h18", lambda w, fx: ["nosuchcommand"]),
        # library
        c("checkpoint.load of a header []", "h18", call=lambda w, fx: load_checkpoint(fx["header_list"])),
        c("checkpoint.load of a config null", "h18", call=lambda w, fx: load_checkpoint(fx["config_null"])),
        c("TrainConfig(lr=inf)", "h18", call=lambda w, fx: train_config(lr=float("inf"))),
        c("TrainConfig(model_cfg=[])", "h18", call=lambda w, fx: train_config(model_cfg=[])),
        c("models.get('smallcnn', widths=[-1])", "h18", call=lambda w, fx: get_model("smallcnn", widths=[-1])),
        c("models.get('vit', patch_size=0)", "h18", call=lambda w, fx: get_model("vit", patch_size=0)),
        c("KarpathyCaptions(json=DIR)", "h18", call=lambda w, fx: karpathy_data(w, w)),
        c("KarpathyCaptions with ../ filename", "h18", call=lambda w, fx: karpathy_data(w / "caps.json", w / "imgs"),
          setup=karpathy(lambda w: "../outside.png")),
        c("TrackStore.open of an index naming ../x", "h18", call=lambda w, fx: open_store(w),
          setup=lambda w, fx: store_with_file(w, "../x.npz")),
        c("fileio.atomic_dir over a user's folder", "h18", call=lambda w, fx: atomic_over(w / "mine"),
          setup=user_folder),
        c("read_state_dict of a pickled object", "h18", call=lambda w, fx: state_dict(fx["pickled"])),
        c("explain(float64 images)", "lead", call=lambda w, fx: explain_with(fx, dtype="float64")),
        c("explain(1-channel images)", "lead", call=lambda w, fx: explain_with(fx, channels=1)),
        c("explain(methods=None)", "lead", call=lambda w, fx: explain_with(fx, methods=None)),
        c("explain(batch_size=0)", "lead", call=lambda w, fx: explain_with(fx, batch_size=0)),
        c("explain(batch_size=1.5)", "lead", call=lambda w, fx: explain_with(fx, batch_size=1.5)),
        c("explain(options='ig')", "lead", call=lambda w, fx: explain_with(fx, options="ig")),
        c("explain(targets=2**70)", "lead", call=lambda w, fx: explain_with(fx, targets=2**70)),
    ]


def earlier_explain(cwd: Path, fx: dict[str, Path]) -> None:
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = main_quietly(attnscope, EXPLAIN(fx, "--out", str(cwd / "earlier"), "--methods", "cam"))
    assert code == 0, "could not make the earlier explain output"
    (cwd / "earlier" / "my-notes.txt").write_text("mine")
    os.chdir(cwd / "earlier")


def karpathy_caption(cwd: Path, fx: dict[str, Path]) -> list[str]:
    return ["caption", "--checkpoint", str(fx["sat"]), "--images", "karpathy", "--split", "train", "--data-opt",
            f"json={cwd / 'caps.json'}", "--data-opt", f"images={cwd / 'imgs'}", "--data-opt", "min_count=1",
            "--data-opt", "size=48", "--out", str(cwd / "o"), "--quiet"]


def load_checkpoint(path: Path) -> Any:
    from attnscope.models import checkpoint

    return checkpoint.load(path)


def train_config(**changes: Any) -> Any:
    from attnscope.train import TrainConfig

    return TrainConfig(**changes)


def get_model(name: str, **cfg: Any) -> Any:
    from attnscope import models

    return models.get(name, **cfg)


def karpathy_data(json_path: Path, images: Path) -> Any:
    from attnscope.data import KarpathyCaptions

    return KarpathyCaptions(json_path, images, min_count=1)


def store_with_file(cwd: Path, file: str) -> None:
    (cwd / "track").mkdir()
    (cwd / "track" / "index.json").write_text(json.dumps({"format": "attnscope-track/1", "settings": {}, "probe": {},
                                                          "snapshots": [{"step": 0, "file": file, "maps": ["cam"]}]}))


def open_store(cwd: Path) -> Any:
    from attnscope.track import TrackStore

    return TrackStore.open(cwd / "track").maps(0)


def atomic_over(path: Path) -> None:
    from attnscope import fileio

    with fileio.atomic_dir(path) as tmp:
        (tmp / "x.txt").write_text("new")


def state_dict(path: Path) -> Any:
    from attnscope.models.torchvision_models import read_state_dict

    return read_state_dict(path)


def explain_with(fx: dict[str, Path], dtype: str = "float32", channels: int = 3, **kwargs: Any) -> Any:
    import torch

    from attnscope import explain
    from attnscope.models import checkpoint

    model, _ = checkpoint.load(fx["run"])
    images = torch.rand(2, channels, 32, 32, dtype=getattr(torch, dtype))
    kwargs.setdefault("methods", ("gradcam",))
    return explain(model, images, **kwargs)


# -- running ---------------------------------------------------------------------------------------------


def tree(*folders: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every path under `folders` (symlinks not followed)."""
    seen: dict[str, tuple[int, int]] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                p = Path(root) / name
                st = p.lstat()
                seen[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return seen


class Timeout(Exception):
    pass


def run_case(case: Case, fx: dict[str, Path], fixtures: Path, work: Path, seconds: int) -> Outcome:
    from attnscope.errors import AttnscopeError

    cwd = work / "".join(ch if ch.isalnum() else "_" for ch in case.name)[:60]
    cwd.mkdir()
    home = os.getcwd()
    os.chdir(cwd)
    kind = "cli" if case.argv is not None else "library"
    try:
        try:
            case.setup(cwd, fx)
        except Exception as e:  # noqa: BLE001 - e.g. a helper this version of attnscope does not have
            return Outcome(case.name, case.owner, kind, False, f"setup failed: {type(e).__name__}: {e}")
        before = tree(cwd, fixtures)
        err = io.StringIO()
        signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(seconds)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                if case.argv is not None:
                    code, raised = main_quietly(attnscope, case.argv(cwd, fx)), None
                else:
                    case.call(cwd, fx)
                    code, raised = 0, None
        except Timeout:
            code, raised = None, "still running after the time limit (the input was not refused)"
        except AttnscopeError as e:
            code, raised = None, e
        except Exception as e:  # noqa: BLE001 - what the census counts
            code, raised = None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            err.write(traceback.format_exc())
        finally:
            signal.alarm(0)
        os.chdir(cwd)
        after = tree(cwd, fixtures)
        wrote = sorted(set(after) - set(before)) + sorted(k for k in before if k in after and after[k] != before[k])
        wrote += sorted(f"removed {k}" for k in set(before) - set(after))
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if kind == "cli" and case.accept:
            ok = code == 0 and "Traceback" not in err.getvalue()
            detail = "accepted" if ok else (str(raised) if raised else f"exit {code}")
        elif kind == "cli":
            ok = code == 2 and len(lines) == 1 and "Traceback" not in err.getvalue() and not wrote
            detail = lines[0] if len(lines) == 1 else (str(raised) if raised else f"exit {code}, {len(lines)} lines")
            if code not in (2, None):
                detail = f"exit {code}: " + (lines[-1] if lines else "accepted silently")
        else:
            ok = isinstance(raised, AttnscopeError) and not wrote
            detail = f"{type(raised).__name__}: {raised}" if isinstance(raised, AttnscopeError) else (
                str(raised) if raised else "no error raised")
        return Outcome(case.name, case.owner, kind, ok, detail[:300], [w.replace(str(work), "") for w in wrote][:5])
    finally:
        while HELD:
            HELD.pop().__exit__(None, None, None)
        os.chdir(home)


def _timeout(signum: int, frame: Any) -> None:
    raise Timeout()


def main_census() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run the cases whose name contains this text")
    parser.add_argument("--skip", action="append", default=[],
                        help="leave out the cases whose name contains this text (e.g. ones that exhaust memory on an "
                             "older version); they count as not passed")
    parser.add_argument("--json", default=None, help="also write the outcomes here")
    parser.add_argument("--timeout", type=int, default=60, help="seconds a case may run before it counts as accepted")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    base = Path(tempfile.mkdtemp(prefix="attnscope-census-"))
    try:
        fixtures, work = base / "fixtures", base / "work"
        fixtures.mkdir()
        work.mkdir()
        fx = build_fixtures(fixtures)
        chosen = [c for c in cases() if args.only is None or args.only in c.name]
        outcomes = []
        for case in chosen:
            skipped = any(text in case.name for text in args.skip)
            o = (Outcome(case.name, case.owner, "cli" if case.argv else "library", False, "not run (--skip)")
                 if skipped else run_case(case, fx, fixtures, work, args.timeout))
            outcomes.append(o)
            print(f"{'ok ' if o.ok else 'BAD'} [{o.owner:4}] {o.case}: {o.detail}"
                  + (f"  (wrote {', '.join(o.wrote)})" if o.wrote else ""), flush=True)
        print()
        for owner in sorted({o.owner for o in outcomes}):
            mine = [o for o in outcomes if o.owner == owner]
            print(f"{owner}: {sum(o.ok for o in mine)} of {len(mine)} cases give one line / a typed error, "
                  "nothing written")
        print(f"all: {sum(o.ok for o in outcomes)} of {len(outcomes)}")
        if args.json:
            Path(args.json).write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main_census()
    sys.exit(0)
