"""benchmarks/faults.py: random kill -9s of train.py, each resume ends bit for bit as the
uninterrupted run, and no artefact on disk is ever partial."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _faults():
    spec = importlib.util.spec_from_file_location("faults", os.path.join(ROOT, "benchmarks", "faults.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_random_kills_then_resumes_end_as_the_uninterrupted_run(tmp_path, capsys):
    out = tmp_path / "faults.json"
    report = _faults().main(["--kills=3", "--seed=1", f"--work_dir={tmp_path / 'runs'}", f"--out={out}"])
    printed = capsys.readouterr().out
    assert report["kills"] == 3 and report["ok"], printed
    assert json.loads(out.read_text())["ok"]
    killed = [row for row in report["rows"] if row["killed"]]
    completed = [row for row in report["rows"] if row.get("completed")]
    assert len(killed) == 3 and completed and all(not row["problems"] for row in report["rows"])
    assert "3 kills over" in printed and "all checks passed" in printed
