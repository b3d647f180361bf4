"""The export modules: each imports alone, and imports run one way (no cycle)."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lowest first: each may import only modules before it in this list.
EXPORT_MODULES = [
    "files",
    "export_report",
    "inference_model",
    "tflite_flatbuffer",
    "tflite_export",
    "lce_export",
    "packed",
    "export",
]


def slb_imports(name):
    """The slb_keras modules that src/slb_keras/<name>.py imports."""
    tree = ast.parse(open(os.path.join(ROOT, "src", "slb_keras", f"{name}.py")).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "slb_keras":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("slb_keras."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("slb_keras."))
    return found


def test_export_modules_import_one_way():
    for i, name in enumerate(EXPORT_MODULES):
        later = set(EXPORT_MODULES[i:])
        assert not slb_imports(name) & later, (name, slb_imports(name) & later)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORT_MODULES)
def test_each_export_module_imports_alone(name):
    result = subprocess.run(
        [sys.executable, "-c", f"import slb_keras.{name}"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
