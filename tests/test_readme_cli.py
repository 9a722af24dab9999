"""The README's command lines as a tested artefact (its Python blocks: tests/test_readme.py): every `attnscope` and
`torchrun` line of the README runs, made tiny. (The commands the report suggests are checked complete, with
`--out` and no markup, in tests/test_report_browser.py; they are not run here.)

What counts as a command line: a line of a ```bash block, or an inline `code span`, that starts with `attnscope `
or `torchrun `. Spans that only name a command or one of its flags in prose (`attnscope demo`, `attnscope
train`) are listed in `REFERENCES` — a new partial span is a decision, not an accident; `make`, `source`,
`pip` and `.venv/bin/...` lines set things up and are not run here.

How a line is made tiny — the lines are long jobs at their written sizes; only these changes are made:
- optional parts `[...]` are left out, and of alternatives `a|b` the first is taken;
- the values of `SMALLER` replace the written ones (`--n 5000` → `--n 8`, `--epochs 5` → `--epochs 1`, ...);
- the options of `ADDED` are added where the line does not give them (a training run on 64 images; `bench`
  of two methods with 2 perturbed copies; `--quiet`);
- everything runs in one folder that holds a tiny trained SmallCNN at `runs/demo`, where the lines that
  train (`attnscope train ...`) run first, so the lines that read their runs find them.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnscope.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# Spans that name a command or a flag in prose; not complete lines.
REFERENCES = {
    "attnscope demo", "attnscope train", "attnscope bench", "attnscope …", "attnscope report RUN", "attnscope report",
    "attnscope train --out runs/x", "attnscope explain --normalize imagenet",
    "attnscope train --model vit --data clutter --weight-decay 0.05",
}
SAME = {"--n-train": "--n", "--n-images": "--n"}  # other names of an option
SMALLER = {"--n": "8", "--n-train": "64", "--epochs": "1", "--probe": "4", "--nproc_per_node": "2"}
ADDED = {
    "train": ["--n", "64", "--n-test", "16", "--batch-size", "32", "--quiet"],
    "demo": ["--epochs", "1", "--n", "128", "--probe", "4", "--no-photos", "--quiet"],
    "explain": ["--n", "4", "--quiet"],
    "bench": ["--n", "4", "--methods", "gradcam,saliency", "--perturbations", "2", "--quiet"],
    "sanity": ["--n", "2", "--quiet"],
    "interventions": ["--n", "2", "--quiet"],
    "caption": ["--n", "2", "--quiet"],
}


def spans(text: str) -> list[str]:
    """Every inline code span and every line of a ```bash block, whitespace joined."""
    blocks = re.findall(r"^```bash\n(.*?)^```$", text, re.M | re.S)
    lines = [line.split("  #")[0].strip() for b in blocks for line in b.splitlines()]
    inline = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
    found = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", inline)]
    return [s.replace("\\|", "|") for s in lines + found if s]


def commands(text: str) -> list[str]:
    """The complete command lines of the README, in order, each once."""
    found = [s for s in spans(text) if s.startswith(("attnscope ", "torchrun "))]
    return list(dict.fromkeys(s for s in found if s not in REFERENCES))


def tiny(line: str) -> list[str]:
    """The argv of a README line made tiny by the rules of this module's docstring."""
    line = re.sub(r"\s*\[[^\]]*\]", "", line)  # optional parts
    argv = [a.split("|")[0] for a in shlex.split(line)]  # the first of alternatives
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        key, eq, value = a.partition("=")
        if eq and key in SMALLER:
            out.append(f"{key}={SMALLER[key]}")
        elif a in SMALLER and i + 1 < len(argv):
            out += [a, SMALLER[a]]
            i += 1
        else:
            out.append(a)
        i += 1
    command = next((a for a in out if a in ADDED), None)
    if "--list" in out or "--help" in out:
        return out
    given = {SAME.get(a, a) for a in out}
    for option, *value in _pairs(ADDED.get(command, [])):
        if option not in given:
            out += [option, *value]
    return out


def _pairs(options: list[str]) -> list[list[str]]:
    """["--n", "4", "--quiet"] → [["--n", "4"], ["--quiet"]]."""
    out: list[list[str]] = []
    for o in options:
        if o.startswith("--"):
            out.append([o])
        else:
            out[-1].append(o)
    return out


LINES = commands(README)
TRAINING = [c for c in LINES if " train " in f"{c} " and "--list" not in c]
OTHERS = [c for c in LINES if c not in TRAINING]


def test_the_readme_lines_are_found_and_every_span_is_a_line_a_reference_or_set_up():
    assert len(LINES) >= 12 and any(c.startswith("torchrun ") for c in LINES)
    for s in spans(README):
        if s.startswith("attnscope ") and s not in REFERENCES:
            assert s in LINES
    assert tiny("attnscope bench --checkpoint runs/demo --n 5000 --out runs/b [--resume]") == \
        ["attnscope", "bench", "--checkpoint", "runs/demo", "--n", "8", "--out", "runs/b", "--methods",
         "gradcam,saliency", "--perturbations", "2", "--quiet"]
    assert tiny("attnscope caption --images scenes\\|DIR --out x".replace("\\|", "|"))[:4] == \
        ["attnscope", "caption", "--images", "scenes"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A working folder with tiny trained runs at runs/demo (SmallCNN) and runs/clip (clip-tiny, which the README
    names without training it); then every README line that trains is run in it."""
    from attnscope.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("readme_cli")
    fit(TrainConfig(model="smallcnn", data="clutter", n=64, n_test=8, epochs=1, batch_size=32, quiet=True,
                    model_cfg={"widths": [4, 4, 8, 8]}, out=str(root / "runs" / "demo")))
    clip = ["train", "--model", "clip-tiny", "--data", "scenes", "--n", "64", "--n-test", "16", "--batch-size", "32",
            "--epochs", "1", "--model-opt", "image_size=96", "--out", str(root / "runs" / "clip"), "--quiet"]
    try:
        main(clip)
    except SystemExit as e:
        assert e.code in (0, None), f"{clip} → exit {e.code}"
    return root


def run_line(line: str, folder: Path, monkeypatch) -> None:
    argv = tiny(line)
    monkeypatch.chdir(folder)
    if argv[0] == "torchrun":
        if shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists():
            pytest.fail("torchrun is not installed beside this Python")
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        done = subprocess.run([torchrun, *argv[1:]], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return
    try:
        main(argv[1:])
    except SystemExit as e:
        assert e.code in (0, None), f"{line} → exit {e.code}"


@pytest.mark.slow
@pytest.mark.parametrize("line", TRAINING + OTHERS, ids=[c[:60] for c in TRAINING + OTHERS])
def test_a_readme_line_runs(line, folder, monkeypatch):
    run_line(line, folder, monkeypatch)
