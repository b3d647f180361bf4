"""benchmarks/soft_kernel.py --jax: the JAX (jit) soft kernel timed against TF's fused one."""

import importlib.util
import json
import os

import pytest

pytest.importorskip("jax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_soft_kernel_times_the_jax_backend_interleaved(tmp_path):
    spec = importlib.util.spec_from_file_location("soft_kernel", os.path.join(ROOT, "benchmarks", "soft_kernel.py"))
    soft_kernel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soft_kernel)
    out = tmp_path / "soft_kernel.json"
    soft_kernel.main(["--bits=1,2", "--shape=4,6", "--runs=3", "--jax", f"--out={out}"])
    report = json.loads(out.read_text())
    for bits in ("1", "2"):
        row = report["bits"][bits]
        assert set(row) >= {"reference", "fused", "jax", "jax_over_fused"}
        assert row["jax"]["platform"] == "cpu" and row["jax"]["median_s"] > 0
        ratio = row["jax_over_fused"]
        assert 0 < ratio["q25"] <= ratio["median"] <= ratio["q75"]
