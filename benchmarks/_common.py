"""Pieces the benchmark scripts share: memory sampling, child processes, JSON reports."""

import json
import os
import resource
import shlex
import subprocess
import threading
import time

_CHILD_TAG = "BENCHMARK_CHILD "


class RssSampler:
    """Resident memory sampled every 2 ms in a thread: baseline and peak, bytes."""

    def __init__(self):
        self.base = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def _run(self):
        while not self._done.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def stop(self):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def report_to_parent(result):
    """Prints `result` (JSON-serializable) for `run_child` to read back."""
    print(_CHILD_TAG + json.dumps(result), flush=True)


def run_child(cmd):
    """Runs `cmd` (a benchmark in a fresh process) and returns what it reported."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = [l for l in out.splitlines() if l.startswith(_CHILD_TAG)][-1]
    return json.loads(line[len(_CHILD_TAG):])


def run_train_py(argv, model_dir, append=True):
    """Runs one train.py command line, its output to `model_dir`.log.

    `append` keeps the log of an earlier, interrupted try (the run resumes from its
    backup). Returns train.py's summary.json, the process's wall seconds and the
    command as one line a reader can paste (`python train.py ...`).
    """
    log_path = model_dir + ".log"
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "a" if append else "w") as log:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - start
    with open(os.path.join(model_dir, "summary.json")) as file:
        summary = json.load(file)
    return summary, wall, " ".join(shlex.quote(a) for a in ["python", *argv[1:]])


def write_report(path, report):
    """Writes the JSON report atomically (training's writer), creating its directory."""
    import training

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    training.write_json(path, report)
