"""`ats.explain` is a real function with its own signature and docstring, in a fresh interpreter whatever was
imported first; the package `attnscope.explain` stays importable by name; `import attnscope` imports no torch."""

import subprocess
import sys

import pytest

CHECK = """
import inspect, sys
{first}
import attnscope as ats
assert inspect.isfunction(ats.explain), type(ats.explain)
assert inspect.signature(ats.explain).parameters["methods"].default == ("gradcam",)
assert ats.explain.__doc__.startswith("Attention maps of `model` for `images`")
import attnscope.explain.engine as engine
from attnscope.explain import Layer
assert engine.__name__ == "attnscope.explain.engine" and ats.explain.engine is engine and ats.explain.Layer is Layer
assert inspect.isfunction(ats.explain) and sys.modules["attnscope.explain"].explain is ats.explain
"""


@pytest.mark.parametrize("first", ["", "import attnscope.explain.engine",
                                   "import attnscope.sanity"])
def test_ats_explain_is_the_function_whatever_is_imported_first(first: str) -> None:
    done = subprocess.run([sys.executable, "-c", CHECK.format(first=first)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_import_attnscope_imports_no_torch() -> None:
    code = "import sys, attnscope; attnscope.__version__; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
