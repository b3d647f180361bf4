"""The export modules import one way (no cycle), in the order of EXPORT_MODULES.

That each imports alone is checked for every module of the package by
tests/test_imports.py::test_each_module_imports_alone.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lowest first: each may import only modules before it in this list.
EXPORT_MODULES = [
    "files",
    "deploy.export_report",
    "deploy.inference_model",
    "deploy.tflite_flatbuffer",
    "deploy.tflite_export",
    "deploy.lce_export",
    "deploy.packed",
    "export",
]


def slb_imports(name):
    """The slb_keras modules (dotted, below slb_keras) that module `name` imports."""
    path = os.path.join(ROOT, "src", "slb_keras", *name.split(".")) + ".py"
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "slb_keras":
            below = node.module.split(".")[1:]
            for alias in node.names:
                candidate = ".".join([*below, alias.name])
                is_module = os.path.exists(os.path.join(ROOT, "src", "slb_keras", *candidate.split(".")) + ".py")
                found.add(candidate if is_module else ".".join(below))
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("slb_keras."))
    return found


def test_the_import_reader_sees_the_deploy_modules():
    assert "deploy.inference_model" in slb_imports("deploy.packed")
    assert "deploy.tflite_export" in slb_imports("export")  # imported inside main()


def test_export_modules_import_one_way():
    for i, name in enumerate(EXPORT_MODULES):
        later = set(EXPORT_MODULES[i:])
        assert not slb_imports(name) & later, (name, slb_imports(name) & later)
