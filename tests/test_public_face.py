"""The public face tells the truth: every package is reachable from `import attnscope as ats` in a fresh
interpreter, every `ats.X.Y` the README and docs use resolves, one listing call covers every registry, every
metric takes the maps first (tensor or AttentionMap), and the REPL shows short reprs."""

from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import attnscope as ats
from attnscope import metrics
from attnscope.errors import InputError, UnknownNameError
from attnscope.maps import AttentionMap, Explanation
from attnscope.registry import REGISTRIES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "attnscope"

# Run in a fresh interpreter: the submodule list, getattr of each, and every ats.X.Y of the README and docs.
FRESH = r"""
import json, pathlib, re, sys
import attnscope as ats
names = list(ats._SUBMODULES)
missing = [n for n in names if not hasattr(ats, n)]
used, broken = set(), []
pattern = re.compile(r"(?<![\w.])ats\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
for path in [pathlib.Path("README.md"), *sorted(pathlib.Path("docs").glob("*.md"))]:
    for m in pattern.finditer(path.read_text()):
        used.add(m.group(1))
for chain in sorted(used):
    obj = ats
    for part in chain.split("."):
        if isinstance(obj, type(ats)) or isinstance(obj, type) or callable(obj):
            if not hasattr(obj, part):
                broken.append(chain)
                break
            obj = getattr(obj, part)
        else:  # an attribute of a value (maps.values, board.rows): not a name of the package
            break
print(json.dumps({"names": names, "missing": missing, "used": sorted(used), "broken": broken}))
"""


@pytest.fixture(scope="module")
def fresh() -> dict:
    out = subprocess.run([sys.executable, "-c", FRESH], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_package_and_module_is_an_attribute_in_a_fresh_interpreter(fresh):
    on_disk = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith("_"))
    on_disk += sorted(p.stem for p in SRC.glob("*.py") if not p.stem.startswith("_"))
    assert sorted(fresh["names"]) == sorted(on_disk)  # read off the folder, none left out
    assert {"evaluate", "stream", "track", "metrics", "models", "data"} <= set(fresh["names"])
    assert fresh["missing"] == []


def test_every_name_the_readme_and_docs_use_resolves(fresh):
    assert {"evaluate.leaderboard", "metrics.energy_in_box", "list", "show"} <= set(fresh["used"])
    assert fresh["broken"] == []


def _registries_in_source() -> set[str]:
    """"module:NAME" of every module-level `NAME = Registry(...)` / `NAME: Registry[...] = Registry(...)` in src/."""
    found = set()
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Registry":
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                found.add(f"{module}:{target.id}")
    return found


def test_one_listing_call_for_every_registry_with_a_wildcard():
    assert _registries_in_source() == {where for _, where in REGISTRIES.values()}  # none left out
    for kind in REGISTRIES:
        names = ats.list(kind)
        assert names == ats.registry.registry(kind).names() and names, kind
    cams = ats.list("methods", "*cam*")
    assert cams == [n for n in ats.list_methods() if fnmatch.fnmatchcase(n, "*cam*")] and "gradcam" in cams
    assert ats.list("metrics", "*energy*") == ["energy_box", "energy_box_norm"]
    assert ats.list("models") == ats.models.names() and ats.list("datasets") == ats.data.names()
    assert ats.list("methods", "nothing*") == []
    with pytest.raises(UnknownNameError, match="Did you mean 'metrics'"):
        ats.list("metric")


def test_metrics_take_the_maps_first_as_tensors_or_attention_maps():
    maps = torch.rand(3, 8, 8)
    images = torch.rand(3, 3, 8, 8)
    boxes = torch.tensor([[0, 0, 4, 4]] * 3)
    amap = AttentionMap(maps, "gradcam", torch.zeros(3, dtype=torch.long))
    f = lambda x, source: x.flatten(1).mean(1)  # noqa: E731
    assert torch.equal(metrics.energy_in_box(amap, boxes), metrics.energy_in_box(maps, boxes))
    assert torch.equal(metrics.sparseness(amap), metrics.sparseness(maps))
    new = metrics.deletion_auc(maps, images, f, step=16)
    assert torch.equal(metrics.deletion_auc(amap, images, f, step=16), new)
    with pytest.deprecated_call(match=r"deletion_auc\(maps, images, f, \.\.\.\)"):
        old = metrics.deletion_auc(f, images, maps, step=16)  # the order before 0.2 still works
    assert torch.equal(old, new)
    both = metrics.infidelity(Explanation({"a": amap}, None, None), images, f, n=2)
    assert torch.equal(both["a"], metrics.infidelity(maps, images, f, n=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the maps-first order warns about nothing
        metrics.road_curve(maps, images, f, percentages=(0, 50))


@pytest.fixture
def explanation() -> Explanation:
    torch.manual_seed(0)
    b = 8
    maps = {n: AttentionMap(torch.rand(b, 16, 16), n, torch.arange(b), "features.1") for n in ("gradcam", "ig")}
    return Explanation(maps, torch.rand(b, 10), torch.arange(b))


def test_an_explanation_slices_every_map_its_logits_and_targets(explanation):
    first = explanation[:3]
    assert isinstance(first, Explanation) and list(first) == ["gradcam", "ig"] and len(first) == 2
    for name in explanation:
        assert torch.equal(first[name].values, explanation[name].values[:3])
        assert torch.equal(first[name].targets, explanation[name].targets[:3])
    assert torch.equal(first.logits, explanation.logits[:3]) and first.targets.tolist() == [0, 1, 2]
    picked = explanation.select(images=[5, 1], methods="ig")
    assert list(picked) == ["ig"] and picked.targets.tolist() == [5, 1]
    assert torch.equal(picked["ig"].values, explanation["ig"].values[[5, 1]])
    assert explanation[2].targets.tolist() == [2] and explanation.select(methods=["ig", "gradcam"]).batch == 8
    mask = torch.zeros(8, dtype=torch.bool)
    mask[[0, 7]] = True
    assert explanation[mask].targets.tolist() == [0, 7]
    with pytest.raises(InputError, match="no map of 'cam'"):
        explanation.select(methods="cam")
    with pytest.raises(IndexError, match="out of range"):
        explanation[8]


def test_values_means_the_raw_tensors_everywhere(explanation):
    assert torch.equal(explanation.values["ig"], explanation["ig"].values)
    with pytest.deprecated_call(match=r"Explanation.values\(\)"):
        assert list(explanation.values()) == [explanation["gradcam"], explanation["ig"]]


def test_reprs_are_short_and_numpy_sees_the_values(explanation):
    shown = repr(explanation)
    assert shown.startswith("Explanation(8 images: gradcam (8, 16, 16), ig (8, 16, 16)") and len(shown) < 200
    amap = explanation["gradcam"]
    assert repr(amap) == ("AttentionMap('gradcam', values=tensor((8, 16, 16), float32), targets=tensor((8,), int64), "
                          "layer='features.1')")
    assert np.array_equal(np.asarray(amap), amap.values.numpy()) and amap.numpy().shape == (8, 16, 16)
    assert np.asarray(amap, dtype=np.float64).dtype == np.float64
    sample = ats.data.ClutteredDigits("test", n=1)[0]
    assert repr(sample).startswith("ClutterSample(image=tensor((3, 64, 64), float32), label=")
    assert len(repr(sample)) < 200
    scene = ats.data.DigitScenes("test", n=1)[0]
    assert repr(scene).startswith("SceneSample(image=tensor((3, 96, 96), float32), captions=[")
    assert len(repr(scene)) < 300


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("package,banned", [("models", ("attnscope.data", "attnscope.explain")),
                                            ("metrics", ("attnscope.models",)), ("report", ("attnscope.models",))])
def test_layers_import_only_from_above(package, banned):
    offenders = {p.name: sorted(i for i in _imports(p) if i.startswith(banned))
                 for p in (SRC / package).glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
