"""The package's import graph: one way (no cycle), every module importable alone."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "slb_keras"


def _module_name(path):
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _top_level_imports(path, inside_functions=False):
    """slb_keras modules imported when `path` is imported (module level, not in functions).

    With `inside_functions`, also those its functions import when they run.
    """
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree) if inside_functions else tree.body:
        if inside_functions:
            nodes = [node]
        elif isinstance(node, ast.Try):  # module level only: imports inside functions run later
            nodes = node.body + [n for handler in node.handlers for n in handler.body]
        elif isinstance(node, ast.If):
            nodes = node.body + node.orelse
        else:
            nodes = [node]
        for item in nodes:
            if isinstance(item, ast.Import):
                found.update(alias.name for alias in item.names if alias.name.startswith("slb_keras"))
            elif isinstance(item, ast.ImportFrom) and item.module and item.module.startswith("slb_keras"):
                for alias in item.names:
                    candidate = f"{item.module}.{alias.name}"
                    is_module = (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                    found.add(candidate if is_module else item.module)
    return found


def _graph(inside_functions=False):
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # Importing a submodule imports its package first, but the package is not
        # the submodule's dependency: drop the edges to slb_keras itself.
        deps = _top_level_imports(path, inside_functions)
        graph[name] = {dep for dep in deps if dep != "slb_keras" and dep != name}
    return graph


def _cycle(graph):
    """A list of modules forming a cycle, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return trail[trail.index(dep):] + [dep] if dep in trail else [node, dep]
            if dep not in state:
                found = visit(dep, trail + [dep])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle():
    graph = _graph()
    assert "slb_keras.layers" in graph and "slb_keras.search.calibration" in graph["slb_keras.search.callbacks"]
    assert _cycle(graph) is None, _cycle(graph)


def test_no_import_cycle_through_imports_inside_functions():
    # One-way imports also where a function imports a module when it runs (as export
    # and packed once did each other's private functions). The package's lazy
    # attributes (slb_keras.__getattr__) are the one intended exception.
    graph = _graph(inside_functions=True)
    graph.pop("slb_keras")
    assert "slb_keras.deploy.tflite_export" in graph["slb_keras.export"]  # imported inside main()
    assert _cycle(graph) is None, _cycle(graph)


# The subpackages by concern and what each may import (besides itself). The utilities
# at the top (argument checks, the private-Keras gateway, safe files, the bundled data)
# import nothing of slb_keras but each other; `slb_keras.export` (the command line)
# and the package itself sit above everything.
_UTILITIES = {"checks", "keras_private", "files", "datasets"}
_MAY_IMPORT = {
    "utilities": {"utilities"},
    "core": {"utilities"},
    "layers": {"utilities", "core"},
    "search": {"utilities", "core", "layers"},
    "convert": {"utilities", "core", "layers"},
    "deploy": {"utilities", "core", "layers", "convert"},
}


def _concern(module):
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in {"export"}:
        return None  # the package itself and its command line: above everything
    return "utilities" if parts[1] in _UTILITIES else parts[1]


def test_subpackages_import_one_way():
    graph = _graph(inside_functions=True)
    concerns = {_concern(m) for m in graph} - {None}
    assert concerns == set(_MAY_IMPORT), concerns  # every module belongs to a known concern
    for module, deps in graph.items():
        concern = _concern(module)
        if concern is None:
            continue
        wrong = {d for d in deps if _concern(d) not in _MAY_IMPORT[concern] | {concern}}
        assert not wrong, (module, wrong)


def test_no_folder_holds_more_than_15_modules():
    for folder in [PACKAGE, *[p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"]]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 15, (folder, len(modules))


def test_layout_checker_rejects_an_upward_import():
    # What the layering test catches: a core module that imports the search tools.
    assert _concern("slb_keras.search.calibration") not in _MAY_IMPORT["core"]
    assert _concern("slb_keras.convert.graph") in _MAY_IMPORT["deploy"]
    assert _concern("slb_keras.export") is None and _concern("slb_keras.checks") == "utilities"


# Private Keras attributes; slb_keras.keras_private reads them for everyone else
# (Keras 3 has no public API for them).
_PRIVATE_GRAPH_ATTRIBUTES = (
    "_nodes_by_depth", "_keras_history", "_inbound_nodes", "_outbound_nodes",
    "_run_through_graph", "_flatten_layers", "_trainable_variables",
    "_non_trainable_variables", "_reduction_axes",
)


def test_private_keras_lives_in_the_gateway():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "keras_private.py":
            continue
        tree = ast.parse(path.read_text())
        imported = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        ]
        assert not [m for m in imported if m and m.startswith("keras.src")], (path.name, imported)
        attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not attributes & set(_PRIVATE_GRAPH_ATTRIBUTES), (path.name, attributes & set(_PRIVATE_GRAPH_ATTRIBUTES))
    gateway = (PACKAGE / "keras_private.py").read_text()
    used = [n for n in _PRIVATE_GRAPH_ATTRIBUTES if "bound" not in n]  # no module reads the node lists
    assert "keras.src" in gateway and all(name in gateway for name in used)


@pytest.mark.slow
def test_each_module_imports_alone():
    names = sorted(n for n in _graph() if n != "slb_keras")
    # One child imports the external libraries once (TensorFlow, Keras: never an
    # slb_keras module), then forks a process per module: each fork starts with no
    # slb_keras module imported, as a fresh interpreter would, without paying for
    # TensorFlow's import fifty times.
    script = (
        "import importlib, json, os, sys, traceback\n"
        "import numpy, tensorflow, keras\n"
        "assert not [m for m in sys.modules if m.startswith('slb_keras')]\n"
        f"names = {names!r}\n"
        "failed = {}\n"
        "for name in names:\n"
        "    read, write = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(read)\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "            os._exit(0)\n"
        "        except BaseException:\n"
        "            os.write(write, traceback.format_exc()[-500:].encode())\n"
        "            os._exit(1)\n"
        "    os.close(write)\n"
        "    message = os.read(read, 4096).decode()\n"
        "    os.close(read)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    if status:\n"
        "        failed[name] = message or f'exit status {status}'\n"
        "print(json.dumps(failed))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {}
