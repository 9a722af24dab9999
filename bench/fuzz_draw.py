"""How `bench/fuzz_cli.py` draws a case: the commands and options read from `--help`, a cheap argv per command,
and values drawn by each option's type and name (valid and hostile)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TINY = ["--n", "32", "--n-test", "16", "--epochs", "1", "--batch-size", "16", "--quiet", "--model-opt",
        "widths=[4,8]", "--data-opt", "size=32", "--data-opt", "digit_size=[10,16]"]
# Flags that ask for long work (the demo's photo step runs 20 methods on ImageNet-size photos): never drawn.
EXPENSIVE = {"--photos"}
# A cheap argv per command (OUT and FX are filled in); a command not listed starts from its required options.
BASE: dict[str, list[str]] = {
    "train": [*TINY, "--out", "OUT"],
    "demo": ["--epochs", "1", "--n", "32", "--probe", "2", "--no-photos", "--quiet", "--out", "OUT"],
    "explain": ["--checkpoint", "FX/run", "--images", "clutter", "--n", "2", "--methods", "gradcam,saliency",
                "--quiet", "--out", "OUT"],
    "sanity": ["--checkpoint", "FX/run", "--images", "2", "--methods", "saliency", "--metrics", "spearman_abs",
               "--permuted-n", "16", "--permuted-epochs", "1", "--samples", "2", "--quiet", "--out", "OUT"],
    "bench": ["--checkpoint", "FX/run", "--images", "2", "--methods", "saliency", "--metrics", "point,energy",
              "--quiet", "--out", "OUT"],
    "interventions": ["--checkpoint", "FX/run", "--n", "2", "--methods", "saliency", "--quiet", "--out", "OUT"],
    "report": ["RUN", "--images", "2"],
    "caption": ["--checkpoint", "FX/sat.safetensors", "--images", "scenes", "--n", "2", "--quiet", "--out", "OUT"],
}
KEYS = ["widths", "size", "dropout", "steps", "n", "json", "images", "digit_size", "num_classes", "batch_size",
        "relu", "window", "stride", "beam_size", "attention", "patch_size", "decoy", "min_count", "x", ""]
HOSTILE_VALUES = ["-1", "0", "1e400", "nan", "[-1]", "[4,1000000000]", "null", "{}", "[[]]", '"x"', "../../etc",
                  str(2**70), "true", "[]", "1.5", "abc", "/dev/zero", "\\u0000"]


@dataclass
class Case:
    number: int
    command: str
    argv: list[str]
    changed: list[str] = field(default_factory=list)  # the options this case set


@dataclass(frozen=True)
class Option:
    """One option of a command as its `--help` shows it."""

    names: tuple[str, ...]  # "--n", "--n-images"
    metavar: str  # INTEGER, FLOAT, TEXT, [a|b], KEY=VALUE ...; "" for a flag
    secondary: tuple[str, ...] = ()  # "--no-photos" of "--photos / --no-photos"
    argument: bool = False  # a positional argument (RUN_DIR)

    @property
    def name(self) -> str:
        return self.names[0].lstrip("-").replace("-", "_").lower()

    @property
    def multiple(self) -> bool:
        return "=" in self.metavar


def commands() -> dict[str, list[Option]]:
    """Every command and its options, read from `python -m attnscope [COMMAND] --help`."""
    top = _help([])
    names = [ln.split()[0] for ln in _section(top, "Commands:")]
    return {name: _options(_help([name])) for name in names}


def _help(argv: list[str]) -> str:
    return subprocess.run([sys.executable, "-m", "attnscope", *argv, "--help"], capture_output=True, text=True,
                          env={**child_env(), "COLUMNS": "200"}, check=True).stdout


def child_env() -> dict[str, str]:
    """The environment of a child interpreter: one thread, and the attnscope this process imports (a relative
    PYTHONPATH would not hold in the case's folder)."""
    import attnscope

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(attnscope.__file__).resolve().parents[1])}


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(title) + 1
    out = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        if line.startswith("  ") and not line.startswith("   "):
            out.append(line.strip())
    return out


def _options(text: str) -> list[Option]:
    usage = text.splitlines()[0]
    found = [Option((word,), "TEXT", argument=True) for word in usage.split("[OPTIONS]", 1)[-1].split()
             if word.isupper()]
    for line in _section(text, "Options:"):
        spec = re.split(r"\s{2,}", line)[0]
        first, _, second = spec.partition(" / ")
        *others, last = first.split(", ")
        last_name, _, metavar = last.partition(" ")
        names = tuple(n for n in (*others, last_name) if n.startswith("--"))
        if names and names[0] != "--help":
            found.append(Option(names, metavar, tuple(n for n in second.split(", ") if n)))
    return found


def make_case(number: int, rng: random.Random, cmds: dict[str, Any], fx: Path) -> Case:
    """A case: a command's cheap argv with 1-4 options set to drawn values (sometimes a value removed)."""
    name = rng.choice(sorted(cmds))
    options = cmds[name]
    argv = list(BASE.get(name, []))
    changed: list[str] = []
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
        option = rng.choice(options)
        changed.append(option.names[0])
        argv = _set(argv, option, rng, fx)
    if rng.random() < 0.05:
        argv.insert(rng.randrange(len(argv) + 1), rng.choice(["--no-such-option", "-x", "--", "extra"]))
    if rng.random() < 0.05 and "--out" in argv:  # a required option left out
        i = argv.index("--out")
        del argv[i : i + 2]
    return Case(number, name, [name, *argv], changed)


def _set(argv: list[str], option: Option, rng: random.Random, fx: Path) -> list[str]:
    """`argv` with `option` set (a flag: switched on or off) to a drawn value."""
    if option.argument:
        value = _path(rng, fx, "run_dir")
        return [value if a == "RUN" else a for a in argv] if "RUN" in argv else [*argv, value]
    kept = _without(argv, option)
    if not option.metavar:
        choices = [o for o in (*option.names, *option.secondary) if o not in EXPENSIVE]
        return [*kept, rng.choice(choices)] if choices else kept
    out = list(kept)
    for _ in range(rng.randint(1, 3) if option.multiple else 1):
        out += [rng.choice(option.names), _value(rng, fx, option)]
    return out


def _value(rng: random.Random, fx: Path, option: Option) -> str:
    kind = option.metavar
    if kind.startswith("[") and kind.endswith("]"):
        return rng.choice([*kind[1:-1].split("|"), "nosuch", ""])
    if kind == "INTEGER":
        return _integer(rng)
    if kind == "FLOAT":
        return rng.choice(["0.5", "0", "-1", "1e-12", "inf", "-inf", "nan", "1e400", "abc", "", "2"])
    return _text(rng, fx, option.name)


def _without(argv: list[str], option: Option) -> list[str]:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in option.names or a in option.secondary:
            skip = bool(option.metavar) and i + 1 < len(argv)
            continue
        out.append(a)
    return out


def _integer(rng: random.Random) -> str:
    if rng.random() < 0.5:  # valid and cheap
        return rng.choice(["1", "2", "3", "+2", "٣"])
    return rng.choice(["0", "-1", str(-(2**31)), str(2**31), str(2**63), str(2**70), "9" * 30, "1e20", "", " ", "3.5",
                       "nan", "0x10", "1_0", "abc"])


def _path(rng: random.Random, fx: Path, name: str) -> str:
    """An input path: good fixtures and hostile ones."""
    good = {"checkpoint": ["FX/run", "FX/run/model.safetensors", "FX/sat.safetensors", "smallcnn", "resnet18"],
            "weights": ["FX/run/model.safetensors"], "images": ["clutter", "scenes", "FX/imgs", "FX/imgs/ok0.png", "2"],
            "run_dir": ["RUN"], "permuted_run": ["FX/run"], "with": ["RUN"]}.get(name, ["FX/run"])
    hostile = ["FX/garbage.safetensors", "FX/crafted.safetensors", "FX/config_list.safetensors",
               "FX/no_header.safetensors", "FX/fifo", "/dev/zero", "FX/nowhere", "FX/hostile", "FX/mixed",
               "FX/hostile/loop", "FX/hostile/fifo.png", "FX/hostile/zero.png", "FX/hostile/truncated.png",
               "FX/hostile/text.png", "FX/hostile/empty.png", "FX/hostile/dangling.png", "FX/one.png",
               "FX/wide.tif", "FX/plain.txt", "FX/caps.json", "", ".", "x" * 300, "a\nb", "FX/run/config.json"]
    return rng.choice(good) if rng.random() < 0.4 else rng.choice(hostile)


def _text(rng: random.Random, fx: Path, name: str) -> str:
    if name == "out":
        return rng.choice(["OUT", "OUT", "mine", "file.txt", "link", ".", "..", "x" * 300, "a\nb", "", "planted",
                           "file.txt/sub", "deep/er/o", "run", "victim"])
    if name in ("checkpoint", "weights", "images", "permuted_run", "run_dir", "with"):
        return _path(rng, fx, name)
    if name in ("model_opt", "data_opt", "task_opt", "option", "method_opt"):
        key = rng.choice(KEYS)
        if name in ("option", "method_opt"):
            key = f"{rng.choice(['ig', 'gradcam', 'saliency', 'nosuch', ''])}.{key}"
        if name == "data_opt" and rng.random() < 0.3:
            return rng.choice([f"json={fx / 'caps.json'}", f"json={fx / 'notjson.json'}", f"images={fx / 'imgs'}",
                               "json=/dev/zero", f"json={fx / 'fifo'}"])
        return f"{key}={rng.choice(HOSTILE_VALUES + ['1', '2', '[4,8]'])}"
    if name == "methods":
        from attnscope import list_methods

        known = sorted(list_methods())
        return rng.choice([",".join(rng.sample(known, rng.randint(1, 2))), "nosuch", "", ",,", "all",
                           "smoothgrad:saliency", "saliency," * 50, "sat", "ltpa", "gradcam"])
    return rng.choice(["", "-", "--", "auto", "none", "abc", "0", "-1", "x" * 300, "a\nb", "ümlaut", "box",
                       "features", "fc", "cascading,data", "pred", "label", "7", "224", "shorter=16", "center",
                       "default", "all", "gradcam", "spearman_abs", "10,10", "0,0", "%s", "{}", "[]"])
