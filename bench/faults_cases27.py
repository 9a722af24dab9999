"""The census cases of issue 27 (hardening round 3), one per item, for `bench/faults_census.py`.

Items 3 and 6 (`interventions` and `report` under the output-folder rules) were another helper's work (h26b,
landed). Library cases marked `accept` pass when the call returns True (the
call itself compares what it got with what it should have got); CLI cases marked `accept` when the command
exits 0 and `check(cwd)` holds.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faults_census as fc

Setup = Callable[[Path, dict[str, Path]], None]


def cases() -> list[fc.Case]:
    c, out = fc.Case, lambda w, name="o": str(w / name)
    return [
        # item 1: a planted marker never makes a streamed --overwrite remove anything outside --out
        *[c(f"{cmd} --stream --overwrite: a marker lists ../victim/ and an absolute folder", "h27",
            lambda w, fx, cmd=cmd: [cmd, "--checkpoint", str(fx["run"]), "--images", "clutter", "--n", "2",
                                    "--stream", "--overwrite", "--out", out(w), "--quiet",
                                    *(["--methods", "saliency"] if cmd != "explain" else [])],
            setup=planted_marker(cmd)) for cmd in ("explain", "bench", "sanity")],
        c("explain --stream --resume: the shard folder is a link outside --out", "h27",
          lambda w, fx: fc.EXPLAIN(fx, "--stream", "--resume", "--out", out(w)), setup=linked_shards),
        # item 2: a run is recognised by its marker only
        c("train --resume on a user's folder with config.json, checkpoints/, track/", "h27",
          lambda w, fx: ["train", *fc.RESUME, "--out", out(w, "mine")], setup=user_run_lookalike),
        # items 3 and 6: interventions and report under the output-folder rules (h26b's work)
        c("interventions --out a user's folder with interventions.json", "h26b",
          lambda w, fx: ["interventions", "--checkpoint", str(fx["run"]), "--out", out(w, "mine"), "--n", "2",
                         "--methods", "saliency", "--quiet"], setup=user_file("mine/interventions.json")),
        c("interventions --out FILE", "h26b", lambda w, fx: ["interventions", "--checkpoint", str(fx["run"]),
          "--out", out(w, "file.txt"), "--n", "2", "--methods", "saliency", "--quiet"],
          setup=user_file("file.txt")),
        c("report RUN --out a user's HTML file", "h26b", lambda w, fx: ["report", str(fx["run"]), "--out",
          out(w, "user.html")], setup=user_file("user.html")),
        c("report RUN --out DIR", "h26b", lambda w, fx: ["report", str(fx["run"]), "--out", out(w, "dir")],
          setup=lambda w, fx: (w / "dir").mkdir()),
        # item 4: explain inside torch.inference_mode()
        c("explain inside torch.inference_mode() gives the maps of a call outside it", "h27",
          call=lambda w, fx: inference_mode_maps(fx, inside=True), accept=True),
        c("explain of images made under inference mode gives their maps", "h27",
          call=lambda w, fx: inference_mode_maps(fx, inside=False), accept=True),
        c("explain of a model made under inference mode", "h27", call=lambda w, fx: inference_model(fx)),
        # item 5: sanity checks on in-place ReLUs, by default
        c("model_randomization on torchvision resnet18 (ReLU inplace) by default equals reuse=False", "h27",
          call=lambda w, fx: sanity_resnet18(), accept=True),
        # item 7: silent results
        c("read_image of an int32 TIFF with values above 65535", "h27", call=lambda w, fx: read_image(w / "wide.tif"),
          setup=wide_tiff),
        *[c(f"explain --images a folder with a {kind} *.png", "h27",
            lambda w, fx: fc.EXPLAIN(fx, "--images", str(w / "imgs"), "--out", out(w)), setup=odd_png(kind))
          for kind in ("dangling", "fifo", "dev-zero")],
        c("bench --method-opt for a method not run", "h27", lambda w, fx: ["bench", "--checkpoint", str(fx["run"]),
          "--out", out(w), "--images", "2", "--methods", "saliency", "--method-opt", "ig.steps=-1", "--quiet"]),
        c("interventions --method-opt for a method not run", "h27", lambda w, fx: ["interventions", "--checkpoint",
          str(fx["run"]), "--out", out(w), "--images", "2", "--methods", "saliency", "--method-opt", "ig.steps=-1",
          "--quiet"]),
        c("explain(targets=callable returning NaN)", "h27",
          call=lambda w, fx: fc.explain_with(fx, targets=lambda o: o[:, 0] * float("nan"))),
        c("explain(targets=callable detaching the logits)", "h27",
          call=lambda w, fx: fc.explain_with(fx, targets=lambda o: o[:, 0].detach())),
        c("normalized() of a 1×1 layer's map (vgg11 at 32 px) is zeros", "h27",
          call=lambda w, fx: near_constant_zeros(), accept=True),
        c("BoxScore with a zero-area box", "h27", call=lambda w, fx: box_score([4.0, 4.0, 4.0, 9.0])),
        # item 8: nothing blocks on a FIFO
        c("read_image of a FIFO", "h27", call=lambda w, fx: read_image(w / "pipe.png"),
          setup=lambda w, fx: os.mkfifo(w / "pipe.png")),
        c("TrackStore whose probe.npz is a FIFO", "h27", call=lambda w, fx: open_probe(w), setup=fifo_probe),
        # item 9: tracebacks that become one line
        c("explain --n 99999999999999999999999", "h27", lambda w, fx: fc.EXPLAIN(fx, "--n", "9" * 23, "--out",
                                                                                out(w))),
        c("explain --data-seed -1", "h27", lambda w, fx: fc.EXPLAIN(fx, "--data-seed", "-1", "--out", out(w))),
        c("train --seed 2**70", "h27", lambda w, fx: fc.TRAIN("--seed", str(2**70), "--out", out(w))),
        c("bench --seed 2**70", "h27", lambda w, fx: ["bench", "--checkpoint", str(fx["run"]), "--out", out(w),
                                                     "--images", "2", "--quiet", "--seed", str(2**70)]),
        c("sanity --seed 2**70", "h27", lambda w, fx: fc.SANITY(fx["run"], "--seed", str(2**70), "--out", out(w))),
        c("train --batch-size 1e20", "h27", lambda w, fx: fc.TRAIN("--batch-size", "1e20", "--out", out(w))),
        c("train --batch-size 10**20", "h27", lambda w, fx: fc.TRAIN("--batch-size", str(10**20), "--out", out(w))),
        c("train --device abc", "h27", lambda w, fx: fc.TRAIN("--device", "abc", "--out", out(w))),
        c("train --device cuda:3", "h27", lambda w, fx: fc.TRAIN("--device", "cuda:3", "--out", out(w))),
        c("explain --device meta", "h27", lambda w, fx: fc.EXPLAIN(fx, "--device", "meta", "--out", out(w))),
        c("explain --out a 300-character name", "h27", lambda w, fx: fc.EXPLAIN(fx, "--out", out(w, "x" * 300))),
        c("caption karpathy: a NUL byte in a filename", "h27", lambda w, fx: fc.karpathy_caption(w, fx),
          setup=fc.karpathy(lambda w: "a\0.png")),
        c("caption a 1×1 image", "h27", lambda w, fx: fc.CAPTION(fx, "--images", str(fx["png1x1"]), "--out",
                                                                out(w))),
        c("explain(meta images)", "h27", call=lambda w, fx: fc.explain_with(fx, device="meta")),
        c("explain(sparse images)", "h27", call=lambda w, fx: fc.explain_with(fx, sparse=True)),
        *[c(f"{name}: the disk fills up while writing maps", "h27", argv, setup=file_size_limit(limit),
            may_leave="o" if "stream" in name else None)
          for name, limit, argv in (
              ("explain", 24_000, lambda w, fx: fc.EXPLAIN(fx, "--methods", "gradcam,saliency", "--out", out(w))),
              ("explain --stream", 24_000, lambda w, fx: fc.EXPLAIN(fx, "--stream", "--out", out(w))),
              ("bench --stream", 4_000, lambda w, fx: ["bench", "--checkpoint", str(fx["run"]), "--images", "clutter",
                                                       "--n", "2", "--stream", "--methods", "saliency", "--out",
                                                       out(w), "--quiet"]))],
        # item 10: train --resume cleans what a killed checkpoint write left
        c("train --resume after a kill during a checkpoint write", "h27",
          lambda w, fx: ["train", *fc.RESUME, "--out", str(w / "run")], setup=stale_checkpoint_tmp,
          accept=True, check=lambda w: not list((w / "run" / "checkpoints").glob(".epoch_*.tmp")),
          may_leave="run"),
        # item 11: a crafted header is refused from its size
        c("checkpoint.load of a header asking for widths=[4, 10**9]", "h27", call=lambda w, fx: crafted_header(w),
          setup=crafted_checkpoint),
    ]


# -- setups ---------------------------------------------------------------------------------------------------


def planted_marker(command: str) -> Setup:
    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        for name, text in (("victim", "precious"), ("victim_abs", "mine")):
            (cwd / name).mkdir()
            (cwd / name / "a.txt").write_text(text)
        (cwd / "o").mkdir()
        (cwd / "o" / ".attnscope-output.json").write_text(json.dumps({
            "format": "attnscope-output/1", "command": command, "files": ["../victim/", f"{cwd}/victim_abs/"],
            "resumable": True}))

    return setup


def linked_shards(cwd: Path, fx: dict[str, Path]) -> None:
    """A streamed explain killed after its run.json, whose maps/ someone replaced by a link to a folder outside."""
    import attnscope

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(attnscope.__file__).parents[1])}
    subprocess.run([sys.executable, "-m", "attnscope", *fc.EXPLAIN(fx, "--stream", "--out", str(cwd / "o"))],
                   check=True, capture_output=True, env=env)  # the attnscope this census imports, from any folder
    (cwd / "victim").mkdir()
    (cwd / "victim" / "a.txt").write_text("precious")
    shutil.rmtree(cwd / "o" / "maps")
    (cwd / "o" / "maps").symlink_to(cwd / "victim")
    marker = json.loads((cwd / "o" / ".attnscope-output.json").read_text())
    (cwd / "o" / ".attnscope-output.json").write_text(json.dumps({**marker, "files": ["maps/", "run.json"],
                                                                 "partial": True}))
    (cwd / "o" / "manifest.json").unlink()


def user_run_lookalike(cwd: Path, fx: dict[str, Path]) -> None:
    (cwd / "mine" / "checkpoints").mkdir(parents=True)
    (cwd / "mine" / "track").mkdir()
    (cwd / "mine" / "config.json").write_text('{"my": "settings"}')
    (cwd / "mine" / "checkpoints" / "notes.txt").write_text("notes")
    (cwd / "mine" / "track" / "x.txt").write_text("x")


def user_file(rel: str) -> Setup:
    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        (cwd / rel).write_text("the user's own file")

    return setup


def odd_png(kind: str) -> Setup:
    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        (cwd / "imgs").mkdir()
        shutil.copy(fx["png"], cwd / "imgs" / "a.png")
        bad = cwd / "imgs" / "b.png"
        if kind == "fifo":
            os.mkfifo(bad)
        else:
            bad.symlink_to("/dev/zero" if kind == "dev-zero" else cwd / "gone.png")

    return setup


def file_size_limit(limit: int = 24 * 1024) -> Setup:
    """Setup: files may not grow past `limit` bytes until the case ends (a full disk, as the writer sees it)."""

    def setup(cwd: Path, fx: dict[str, Path]) -> None:
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
        fc.CLEANUPS.append(lambda: (resource.setrlimit(resource.RLIMIT_FSIZE, old),
                                    signal.signal(signal.SIGXFSZ, handler)))

    return setup


def stale_checkpoint_tmp(cwd: Path, fx: dict[str, Path]) -> None:
    run = fc.copy_run(cwd, fx)
    (run / "checkpoints" / ".epoch_002.safetensors.k3x_9qab.tmp").write_bytes(b"half a checkpoint")


# -- library calls ----------------------------------------------------------------------------------------------


def inference_mode_maps(fx: dict[str, Path], inside: bool) -> bool:
    """Maps asked inside inference mode (`inside`), or of images made there, equal those of a plain call."""
    import torch

    from attnscope import explain
    from attnscope.models import checkpoint

    model, _ = checkpoint.load(fx["run"])
    images, methods = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), ("gradcam", "saliency")
    want = explain(model, images, methods)
    with torch.inference_mode():
        made = images.clone()  # an inference tensor
        got = explain(model, images, methods) if inside else None
    got = got if inside else explain(model, made, methods)
    return all(torch.allclose(got[m].values, want[m].values, atol=1e-6) for m in methods)


def inference_model(fx: dict[str, Path]) -> Any:
    import torch

    from attnscope import explain
    from attnscope.models import checkpoint

    with torch.inference_mode():
        model, _ = checkpoint.load(fx["run"])
    return explain(model, torch.rand(2, 3, 32, 32), "saliency")


def sanity_resnet18() -> bool:
    import torch
    import torchvision

    from attnscope.sanity import Randomisation, model_randomization

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a, b = model_randomization(model, x), model_randomization(model, x, randomisation=Randomisation(reuse=False))
    return a.steps == b.steps and all(
        torch.allclose(a.scores[m][s][k], b.scores[m][s][k], atol=1e-5, equal_nan=True)
        for m in a.scores for s in a.steps for k in a.scores[m][s])


def wide_tiff(cwd: Path, fx: dict[str, Path]) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.array([[0, 70000], [35000, 1000]], dtype=np.int32), mode="I").save(cwd / "wide.tif")


def read_image(path: Path) -> Any:
    from attnscope.data import read_image

    return read_image(path)


def near_constant_zeros() -> bool:
    import torch
    import torchvision

    from attnscope import explain

    torch.manual_seed(0)
    vgg = torchvision.models.vgg11(num_classes=10).eval()
    maps = explain(vgg, torch.rand(2, 3, 32, 32), ("gradcam", "layercam"), layer="features")
    return all(torch.equal(m.normalized(), torch.zeros_like(m.values)) for m in maps.values())


def box_score(box: list[float]) -> Any:
    import torch

    from attnscope.explain.tasks import BoxScore

    return BoxScore(torch.tensor(box), 1)


def fifo_probe(cwd: Path, fx: dict[str, Path]) -> None:
    from attnscope.track.store import FORMAT, INDEX

    (cwd / "track").mkdir()
    (cwd / "track" / INDEX).write_text(json.dumps({"format": FORMAT, "settings": {}, "probe": {"file": "probe.npz"},
                                                   "snapshots": []}))
    os.mkfifo(cwd / "track" / "probe.npz")


def open_probe(cwd: Path) -> Any:
    from attnscope.track.store import TrackStore

    return TrackStore.open(cwd / "track").probe()


def crafted_checkpoint(cwd: Path, fx: dict[str, Path]) -> None:
    from safetensors.torch import save_file

    from attnscope import models
    from attnscope.models import checkpoint

    header = {"format": checkpoint.FORMAT, "model": {"name": "smallcnn", "config": {"widths": [4, 10**9]}}}
    save_file(dict(models.get("smallcnn", widths=[4, 8]).state_dict()), str(cwd / "crafted.safetensors"),
              metadata={"attnscope": json.dumps(header)})


def crafted_header(cwd: Path) -> Any:
    """Load a checkpoint whose header asks for widths=[4, 10**9], with at most 1 GB more memory than now."""
    from attnscope.errors import CheckpointError
    from attnscope.models import checkpoint

    old = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        now = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (now + 2**30, old[1]))
    try:
        return checkpoint.load(cwd / "crafted.safetensors")
    except CheckpointError as e:
        if "allocate" in str(e):  # refused only once the allocation failed: what the header should have told
            raise RuntimeError(f"allocated before refusing: {e}") from None
        raise
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)
