"""Fault injection: kill -9 training runs at random points, resume, compare.

Runs one uninterrupted reference run of a tiny configuration (`--deterministic`,
`--export`), then chains of the same command in fresh model_dirs, each process of a
chain killed with SIGKILL at a random (seeded) moment: in a random epoch, at a random
time after the epoch's start, or in the final phase (evaluation, model.keras,
model.tflite, summary.json, removal of the backup), or during start-up (lock,
flags.json). After each kill it checks that nothing on disk is partial (flags.json and
summary.json parse, model.keras is a whole zip, model.tflite loads, history.csv reads,
the lock is free), then starts the same command again, which resumes. A chain ends
when a process completes; its result must equal the reference bit for bit (history
without wall times, test accuracy and loss, every weight of model.keras, the bytes of
model.tflite) and its directory must hold the reference's files and no others (no
backup, temporary or lock file). Prints one table row per process and exits with
status 1 if any check failed.

Example:

    python benchmarks/faults.py --kills=10 --seed=0 --out=runs/faults.json
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = dict(
    model="vgg_small",
    dataset="digits",
    width_multiplier=0.0625,
    image_size=16,
    epochs=3,
    steps_per_epoch=12,  # epochs long enough to be hit inside
    batch_size=16,
    bn_calibration_steps=2,
)
# stdout is a pipe, so Keras prints one line per epoch start and end: the kill schedule follows them.
FLAGS = [f"--{k}={v}" for k, v in CONFIG.items()] + ["--deterministic", "--export"]
# Where kills are aimed, in seeded random order within each cycle of 10 (so 10 kills
# cover every phase): start-up (lock, flags.json), an epoch (its steps, calibration,
# validation, CSV row, backup), the final save of model.keras (a new temporary file
# exists), the export (model.keras was written), the end (summary.json exists: the
# backup is being removed).
PHASE_CYCLE = ("start-up", "epoch", "epoch", "epoch", "epoch", "save", "save", "export", "export", "end")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs in all (each hits a live run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--out", default=None, help="JSON report")
    return parser.parse_args(argv)


class _Process:
    """train.py in a child process; its stdout lines with their arrival times."""

    def __init__(self, model_dir):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
        env.pop("TF_CONFIG", None)
        self.start = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), *FLAGS, f"--model_dir={model_dir}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines = []  # (seconds since start, line)
        self.stderr = []
        threading.Thread(target=self._read, args=(self.popen.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.popen.stderr, self.stderr), daemon=True).start()

    def _read(self, stream, into):
        for line in stream:
            into.append((time.monotonic() - self.start, line.rstrip("\n")))

    def wait_for(self, predicate, timeout=600):
        """(seconds since start, line) of the first line satisfying predicate, or
        (None, None) if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = self.popen.poll() is not None
            if ended:
                time.sleep(0.2)  # let the reader threads drain the pipes
            for seconds, line in list(self.lines):
                if predicate(line):
                    return seconds, line
            if ended:
                return None, None
            time.sleep(0.01)
        raise TimeoutError("train.py made no progress for 10 minutes")

    def poll_until(self, condition, timeout=600):
        """Waits until condition() (checked every 2 ms); seconds since start, or None if
        the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return time.monotonic() - self.start
            if self.popen.poll() is not None:
                return None
            time.sleep(0.002)
        raise TimeoutError("train.py made no progress for 10 minutes")

    def sleep_until(self, seconds):
        """Sleeps until `seconds` after start or the end of the process; True if alive."""
        while time.monotonic() - self.start < seconds:
            if self.popen.poll() is not None:
                return False
            time.sleep(0.005)
        return self.popen.poll() is None


def _backup_epoch(model_dir):
    """The epoch of the backup in model_dir (0: none, or its metadata being written)."""
    try:
        with open(os.path.join(model_dir, "backup", "training_metadata.json")) as file:
            return json.load(file)["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _names(model_dir):
    try:
        return os.listdir(model_dir)
    except OSError:  # not created yet
        return []


def _temporary_models(model_dir):
    return {n for n in _names(model_dir) if n.startswith(".tmp-") and n.endswith("model.keras")}


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _timeline(process, model_dir):
    """Reference phase times (seconds since start) of an uninterrupted process, from its
    first line and what appears on disk (Keras prints an epoch's lines at its end)."""
    times = {"describe": process.wait_for(lambda line: line.startswith("vgg_small"))[0]}
    for epoch in range(1, CONFIG["epochs"] + 1):
        times[f"backup{epoch}"] = process.poll_until(lambda: _backup_epoch(model_dir) >= epoch)
    times["save"] = process.poll_until(lambda: _temporary_models(model_dir))
    process.popen.wait()
    times["end"] = time.monotonic() - process.start
    if None in times.values():
        raise RuntimeError(f"the reference run did not go through every phase: {times}")
    return times


def _check_disk(model_dir, reference_flags):
    """Problems with what a killed run left: [] if every artefact is whole."""
    import training
    from training.lock import RunDirLock

    problems = []
    if not os.path.isdir(model_dir):
        return problems
    names = set(os.listdir(model_dir))
    for name in (training.FLAGS_FILE, training.SUMMARY_FILE):
        if name in names:
            try:
                value = training.read_json(os.path.join(model_dir, name))
            except ValueError as error:
                problems.append(f"{name} partial ({error})")
                continue
            if name == training.FLAGS_FILE and value != reference_flags:
                problems.append("flags.json differs")
    if training.MODEL_FILE in names:
        try:
            with zipfile.ZipFile(os.path.join(model_dir, training.MODEL_FILE)) as archive:
                if archive.testzip() is not None:
                    problems.append("model.keras has a corrupt member")
        except zipfile.BadZipFile as error:
            problems.append(f"model.keras partial ({error})")
    if training.TFLITE_FILE in names:
        from ai_edge_litert.interpreter import Interpreter

        try:
            Interpreter(model_path=os.path.join(model_dir, training.TFLITE_FILE)).allocate_tensors()
        except Exception as error:  # noqa: BLE001 - any failure to load is a partial file
            problems.append(f"model.tflite does not load ({error})")
    try:
        training.run_dir.read_history(os.path.join(model_dir, training.HISTORY_FILE))
    except Exception as error:  # noqa: BLE001
        problems.append(f"history.csv unreadable ({error})")
    try:
        RunDirLock(model_dir).acquire().release()
    except training.UsageError as error:
        problems.append(f"lock still held ({error})")
    return problems


def _disk_state(model_dir):
    """A few words on what a model_dir holds: backup epoch and final files."""
    if not os.path.isdir(model_dir):
        return "no model_dir"
    names = sorted(os.listdir(model_dir))
    words = []
    metadata = os.path.join(model_dir, "backup", "training_metadata.json")
    if os.path.exists(metadata):
        try:
            with open(metadata) as file:
                words.append(f"backup epoch {json.load(file)['epoch']}")
        except ValueError:
            words.append("backup metadata partial")
    words += [name for name in names if name in ("model.keras", "model.tflite", "summary.json")]
    words += [name for name in names if name.startswith((".tmp-", ".lock"))]
    return ", ".join(words) or "flags only" if names else "empty"


def _compare(model_dir, reference_dir):
    """Problems of a completed chain against the reference: [] if identical."""
    import keras
    import numpy as np

    import training

    problems = []
    if sorted(os.listdir(model_dir)) != sorted(os.listdir(reference_dir)):
        problems.append(f"files {sorted(os.listdir(model_dir))} != {sorted(os.listdir(reference_dir))}")
    summary, reference = (
        training.read_json(os.path.join(d, training.SUMMARY_FILE)) for d in (model_dir, reference_dir)
    )
    strip = lambda rows: [{k: v for k, v in row.items() if k not in ("epoch_seconds", "train_seconds")} for row in rows]
    if strip(summary["history"]) != strip(reference["history"]):
        problems.append("history differs")
    for key in ("test_accuracy", "test_loss"):
        if summary[key] != reference[key]:
            problems.append(f"{key} {summary[key]} != {reference[key]}")
    weights = [
        keras.models.load_model(os.path.join(d, training.MODEL_FILE), compile=False).weights
        for d in (model_dir, reference_dir)
    ]
    if len(weights[0]) != len(weights[1]) or any(
        not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(*weights)
    ):
        problems.append("model.keras weights differ")
    with open(os.path.join(model_dir, training.TFLITE_FILE), "rb") as a, open(
        os.path.join(reference_dir, training.TFLITE_FILE), "rb"
    ) as b:
        if a.read() != b.read():
            problems.append("model.tflite differs")
    return problems


def _phases(rng):
    """The phases kills are aimed at: each cycle of PHASE_CYCLE shuffled, forever."""
    while True:
        cycle = list(PHASE_CYCLE)
        rng.shuffle(cycle)
        yield from cycle


def _aim(process, phase, rng, model_dir, times, resumed_at):
    """Waits for `phase` of this process (at a random point of it): (what, seconds since
    start to kill at), or (what, None) if the process ended first.

    `resumed_at` is the epoch of the backup the process starts from."""
    if phase == "start-up":
        at = rng.uniform(0.3, 1.0) * times["describe"]
        return f"start-up +{at:.2f}s", at
    if phase == "epoch":
        epoch = rng.randint(resumed_at + 1, CONFIG["epochs"])
        if epoch == resumed_at + 1:  # from its first line, as long as the reference took
            started, _ = process.wait_for(lambda line: line.startswith("vgg_small"))
            length = times["backup1"] - times["describe"]
        else:  # from the backup of the epoch before
            started = process.poll_until(lambda: _backup_epoch(model_dir) >= epoch - 1)
            length = times[f"backup{epoch}"] - times[f"backup{epoch - 1}"]
        delay = rng.uniform(0, 0.8 * length)  # this machine's speed varies: stay inside
        return f"epoch {epoch} +{delay:.2f}s", None if started is None else started + delay
    # What a killed process left (a temporary, model.keras) does not count.
    stale, model_file = _temporary_models(model_dir), os.path.join(model_dir, "model.keras")
    saved = _mtime(model_file)
    condition = {
        "save": lambda: _temporary_models(model_dir) - stale,
        "export": lambda: _mtime(model_file) not in (None, saved),
        "end": lambda: "summary.json" in _names(model_dir),
    }[phase]
    started = process.poll_until(condition)
    delay = rng.uniform(0, 0.5 if phase == "export" else 0.2)
    return f"{phase} +{delay:.2f}s", None if started is None else started + delay


def run_faults(kills, seed, work_dir, verbose=True):
    """Runs the reference and the killed chains; returns the report (see the docstring).
    With verbose, prints each process's table row as it ends."""
    import training

    rng = random.Random(seed)
    phases = _phases(rng)
    reference_dir = os.path.join(work_dir, "reference")
    reference = _Process(reference_dir)
    times = _timeline(reference, reference_dir)
    if reference.popen.returncode != 0:
        raise RuntimeError("the reference run failed:\n" + "\n".join(l for _, l in reference.stderr[-20:]))
    reference_flags = training.read_json(os.path.join(reference_dir, training.FLAGS_FILE))
    rows, chain, done_kills, phase = [], 0, 0, None
    model_dir = None
    while True:
        if model_dir is None:
            chain += 1
            model_dir = os.path.join(work_dir, f"chain{chain}")
        resumed_at = _backup_epoch(model_dir) if os.path.isdir(model_dir) else 0
        process = _Process(model_dir)
        row = {"chain": chain, "process": sum(r["chain"] == chain for r in rows) + 1}
        phase = phase or next(phases)
        if done_kills < kills and phase == "epoch" and resumed_at >= CONFIG["epochs"]:
            # This chain is past its epochs: let it complete (a check) and aim at a new one.
            process.popen.wait()
            row.update(target="- (new chain)", killed=False)
        elif done_kills < kills:
            target, at = _aim(process, phase, rng, model_dir, times, resumed_at)
            phase = None
            alive = at is not None and process.sleep_until(at)
            if alive:
                os.kill(process.popen.pid, signal.SIGKILL)
                done_kills += 1
            process.popen.wait()
            row.update(target=target, killed=alive)
        else:
            process.popen.wait()
            row.update(target="-", killed=False)
        time.sleep(0.3)  # the reader threads
        out = [line for _, line in process.lines]
        resumed = [line for line in out if line.startswith(f"Resuming {model_dir} ")]
        row["resumed"] = resumed[0][len(f"Resuming {model_dir} "):].split(" (")[0] if resumed else ""
        row["seconds"] = round(time.monotonic() - process.start, 1)
        row["on_disk"] = _disk_state(model_dir)
        row["problems"] = _check_disk(model_dir, reference_flags)
        if not row["killed"]:
            if process.popen.returncode != 0:
                row["problems"].append(
                    f"exit {process.popen.returncode}: " + " | ".join(l for _, l in process.stderr[-3:])
                )
            else:
                row["problems"] += _compare(model_dir, reference_dir)
                row["completed"] = True
            model_dir = None if done_kills < kills or row.get("completed") else model_dir
        rows.append(row)
        if verbose:
            _print_row(row)
        if (done_kills >= kills and row.get("completed")) or (not row["killed"] and not row.get("completed")):
            break  # done, or a run failed by itself: the report says how
    return {
        "config": CONFIG,
        "flags": FLAGS,
        "seed": seed,
        "kills": done_kills,
        "chains": chain,
        "reference_seconds": times,
        "rows": rows,
        "ok": not any(row["problems"] for row in rows),
    }


HEADER = f"{'chain':>5} {'proc':>4}  {'kill aimed at':<18} {'killed':<6} {'s':>5}  {'resumed':<21} {'on disk after':<44} check"


def _print_row(row):
    check = "ok" if not row["problems"] else "; ".join(row["problems"])
    if row.get("completed") and not row["problems"]:
        check = "ok, = reference"
    print(
        f"{row['chain']:>5} {row['process']:>4}  {row['target']:<18} {'yes' if row['killed'] else 'no':<6} "
        f"{row['seconds']:>5}  {row['resumed'][:21]:<21} {row['on_disk'][:44]:<44} {check}",
        flush=True,
    )


def print_table(report):
    print(HEADER)
    for row in report["rows"]:
        _print_row(row)
    print(f"{report['kills']} kills over {report['chains']} chains: {'all checks passed' if report['ok'] else 'FAILED'}")


def main(argv=None):
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="faults-")
    try:
        print(HEADER, flush=True)
        report = run_faults(args.kills, args.seed, work_dir)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(f"{report['kills']} kills over {report['chains']} chains: {'all checks passed' if report['ok'] else 'FAILED'}")
    if args.out:
        from benchmarks import _common

        _common.write_report(args.out, report)
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
