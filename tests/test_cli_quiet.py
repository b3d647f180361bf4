"""The command lines start quietly: a usage error is one line, whatever TensorFlow logs
while it loads; `--help` does not start TensorFlow.

The subprocess tests run the real commands in the user's environment less
TF_CPP_MIN_LOG_LEVEL (the clean start that showed the noise).
"""

import os
import subprocess
import sys
import textwrap

import pytest

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")}
    env.update(extra)
    return env


def _run(args, env=None, stderr=subprocess.STDOUT):
    """[python, *args] from the repository root: (status, stdout and stderr together)."""
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env or _clean_env(),
        stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300,
    )
    return result.returncode, result.stdout if stderr is subprocess.STDOUT else (result.stdout, result.stderr)


# --- train.py ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("--model=nope", "train.py: error: flag --model=nope: value should be one of"),  # before TF
        ("--wbits=9", "train.py: error: Invalid --wbits=9: expected an integer from 1 to 8."),  # after
    ],
)
def test_train_py_usage_error_is_exactly_one_line(flag, expected):
    status, output = _run(["train.py", flag])
    assert status == 2
    assert output.splitlines() == [output.strip()] and output.startswith(expected), output


def test_train_py_help_does_not_start_tensorflow():
    code = textwrap.dedent("""
        import runpy, sys
        sys.argv = ["train.py", "--help"]
        try:
            runpy.run_path("train.py", run_name="__main__")
        except SystemExit:
            pass
        assert "tensorflow" not in sys.modules, "--help imported TensorFlow"
    """)
    status, output = _run(["-c", code])
    assert status == 0, output
    assert "--wbits:" in output and "--[no]show_recipe:" in output


# A start of TensorFlow 2.21 on a machine without a GPU, as it reaches stderr.
STARTUP_LOG = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796071174.853056   15540 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results.\n",
    "I0000 00:00:1796071174.853447   15540 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.\n",
    "I0000 00:00:1796071175.059563   15540 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to "
    "use available CPU instructions in performance-critical operations.\n",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n",
    "E0000 00:00:1796071175.765086   15540 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)\n",
]
WARNING = "W0000 00:00:1796071176.1 15540 loader.cc:12] a warning\n"
ERROR = "E0000 00:00:1796071176.2 15540 loader.cc:34] an error\n"
PYTHON = [
    "/x/module.py:12: UserWarning: a Python warning\n",
    "  warnings.warn('a Python warning')\n",
    "Traceback (most recent call last):\n",
]


def _kept(start_filter, lines):
    return [line for line in lines if start_filter.keep(line)]


def test_startup_log_filter_applies_the_log_level():
    lines = [*STARTUP_LOG, WARNING, ERROR, *PYTHON]
    # TF_CPP_MIN_LOG_LEVEL unset: errors only, and no failed cuInit where no driver was found.
    assert _kept(train._StartupLogFilter(2, expected_no_gpu=True), lines) == [ERROR, *PYTHON]
    assert _kept(train._StartupLogFilter(2), lines) == [STARTUP_LOG[-1], ERROR, *PYTHON]
    assert _kept(train._StartupLogFilter(1), lines) == [STARTUP_LOG[-1], WARNING, ERROR, *PYTHON]
    assert _kept(train._StartupLogFilter(3), lines) == PYTHON
    # A cuInit that fails although a driver was found is an error worth seeing.
    assert _kept(train._StartupLogFilter(2, expected_no_gpu=True), STARTUP_LOG[-1:]) == STARTUP_LOG[-1:]


def test_filtered_stderr_passes_what_is_not_the_startup_log():
    # Written at the file descriptor, as TensorFlow's C++ log is, and through Python.
    code = textwrap.dedent(f"""
        import os, sys, warnings
        import train
        with train._filtered_stderr(train._StartupLogFilter(2, expected_no_gpu=True).keep):
            os.write(2, {"".join(STARTUP_LOG).encode()!r})
            warnings.warn("a Python warning")
            os.write(2, {ERROR.encode()!r})
            print("stdout is left alone", flush=True)
        print("stderr is back", file=sys.stderr)
    """)
    status, (out, err) = _run(["-c", code], stderr=subprocess.PIPE)
    assert status == 0, err
    assert out == "stdout is left alone\n"
    assert [line for line in err.splitlines() if "warnings.warn" not in line] == [
        "<string>:6: UserWarning: a Python warning",
        ERROR.strip(),
        "stderr is back",
    ], err


# --- python -m slb_keras.export -------------------------------------------------------------


def test_export_cli_parses_and_checks_before_importing_keras(tmp_path):
    # src/slb_keras/export.py on its own (not through the package, whose __init__ imports Keras).
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("export_cli", "src/slb_keras/export.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for argv in (["--help"], ["--model=m.keras"], ["--model={empty}", "--out={tmp_path / 'm.tflite'}"]):
            try:
                module.main(argv)
            except SystemExit as exit:
                print("status", exit.code)
        assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "imported Keras"
    """)
    status, output = _run(["-c", code])
    assert status == 0, output
    assert "usage: python -m slb_keras.export" in output and "status 0" in output
    assert "error: the following arguments are required: --out\nstatus 2" in output
    assert "the file exists but cannot be read as a Keras model (it is empty).\nstatus 2" in output
    assert os.listdir(tmp_path) == ["empty.keras"]


def test_export_cli_help_exits_0():
    status, output = _run(["-m", "slb_keras.export", "--help"])
    assert status == 0
    assert "usage: python -m slb_keras.export" in output and "--arithmetic" in output


def test_export_cli_arithmetic_choices_are_export_tflites():
    from slb_keras import export
    from slb_keras.deploy import tflite_export

    assert export._ARITHMETIC == tflite_export.ARITHMETIC


def test_export_module_still_re_exports_the_public_names():
    from slb_keras import export
    from slb_keras.deploy import packed
    from slb_keras.deploy import tflite_export

    assert export.export_tflite is tflite_export.export_tflite
    assert export.load_packed is packed.load_packed
    assert all(hasattr(export, name) for name in export.__all__)
    assert set(export.__all__) <= set(dir(export))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        export.nope  # noqa: B018
