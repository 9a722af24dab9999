"""The shape of the code, counted from its syntax tree: what issue 26 asks to keep at zero.

    python tools/structure.py            # the table; exit 1 when a count is over its limit
    python tools/structure.py --list     # also every offending file, import and function

Counted over src/attnscope (and, for imports of the CLI, bench/, experiments/, examples/ and tools/):
- import circles between modules of src/ (strongly connected components of the module import graph,
  imports inside functions included: a circle closed at call time is still a circle);
- imports of `attnscope.cli` outside `cli/` (`python -m attnscope`, i.e. `__main__`, is the CLI's own door);
- imports of `attnscope.explain.engine` outside `explain/`;
- public library functions (not in `cli/`, name without a leading `_`, at module level or a public method
  of a public class) with more than 10 parameters, the two front doors excepted (`ats.explain`, whose keywords are the
  Explainer's, and `ats.show`, whose keywords are one picture's labels and style);
- files over 400 lines; functions over 60 lines.

Only the standard library: anyone can rerun it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "attnscope"
MAX_PARAMS, MAX_FILE, MAX_FUNCTION = 10, 400, 60
EXEMPT_PARAMS = {"attnscope.explain.api.explain", "attnscope.report.show.show"}


def module_name(path: Path, base: Path = SRC) -> str:
    """`src/attnscope/explain/api.py` → `attnscope.explain.api` (a package's `__init__` is the package)."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, here: str, is_package: bool) -> Iterator[str]:
    """Every module name `tree` imports (absolute, relative resolved), including `from X import submodule`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.args[0].value


def graph(files: dict[str, tuple[Path, ast.AST]]) -> dict[str, set[str]]:
    """Module → the modules of src/ it imports (a name that is not a module counts as its package)."""
    out: dict[str, set[str]] = {}
    for name, (path, tree) in files.items():
        edges = set()
        for target in imports(tree, name, path.name == "__init__.py"):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith(PACKAGE + "."):
                edges.add(target)
        out[name] = edges
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), excluding a package → its child edge.

    A package's `__init__` importing its own submodules, which import the package's siblings, is how every
    package is assembled; a circle is counted when it closes without going through such a parent edge.
    """
    plain = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in plain.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(plain):
        if v not in index:
            visit(v)
    return found


def functions(tree: ast.AST, module: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, bool]]:
    """(qualified name, node, public) of every function and method in a module."""
    def walk(node: ast.AST, prefix: str, public: bool) -> Iterator[tuple[str, ast.AST, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                is_public = public and not child.name.startswith("_")
                yield name, child, is_public
                yield from walk(child, name, False)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}.{child.name}", public and not child.name.startswith("_"))
    yield from walk(tree, module, not any(p.startswith("_") for p in module.split(".")))


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return len([n for n in names if n not in ("self", "cls")])


def count(listing: bool) -> dict[str, tuple[int, int, list[str]]]:
    files = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        files[module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    edges = graph(files)
    circles = cycles(edges)

    folders = ("bench", "experiments", "examples", "tools", "tests")
    outside: list[Path] = [p for d in folders for p in (ROOT / d).rglob("*.py")]
    cli_users, engine_users = [], []
    for name, (path, tree) in files.items():
        targets = set(imports(tree, name, path.name == "__init__.py"))
        in_cli = name.startswith(("attnscope.cli", "attnscope.__main__"))
        if not in_cli and any(t == "attnscope.cli" or t.startswith("attnscope.cli.") for t in targets):
            cli_users.append(name)
        if not name.startswith("attnscope.explain") and any(t.startswith("attnscope.explain.engine") for t in targets):
            engine_users.append(name)
    for path in outside:
        if path.parts[-2] == "tests" or "tests" in path.relative_to(ROOT).parts[:1]:
            continue  # tests may drive the CLI through its functions
        targets = set(imports(ast.parse(path.read_text(encoding="utf-8")), "script", False))
        if any(t == "attnscope.cli" or t.startswith("attnscope.cli.") for t in targets):
            cli_users.append(str(path.relative_to(ROOT)))

    wide, long_functions, long_files = [], [], []
    for name, (path, tree) in files.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE:
            long_files.append(f"{path.relative_to(ROOT)}: {lines} lines")
        in_cli = name.startswith("attnscope.cli")
        for qual, node, public in functions(tree, name):
            n = parameters(node)
            if public and not in_cli and n > MAX_PARAMS and qual not in EXEMPT_PARAMS:
                wide.append(f"{qual}: {n} parameters")
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION:
                long_functions.append(f"{qual}: {length} lines")
    return {
        "import circles in src/": (len(circles), 0, [" ↔ ".join(c) for c in circles]),
        "imports of attnscope.cli outside cli/": (len(cli_users), 0, cli_users),
        "imports of explain.engine outside explain/": (len(engine_users), 0, engine_users),
        f"public functions with > {MAX_PARAMS} parameters": (len(wide), 0, wide),
        f"files over {MAX_FILE} lines": (len(long_files), 0, long_files),
        f"functions over {MAX_FUNCTION} lines": (len(long_functions), 0, long_functions),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print every offending file, import and function")
    args = parser.parse_args(argv)
    counts = count(args.list)
    width = max(map(len, counts))
    print(f"{'count':<{width}}  value  limit")
    over = False
    for label, (value, limit, items) in counts.items():
        print(f"{label:<{width}}  {value:>5}  {limit:>5}")
        over |= value > limit
        if args.list:
            for item in items:
                print(f"    {item}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
