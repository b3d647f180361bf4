"""An exclusive lock on a run directory, held for the run's whole life.

`RunDirLock` takes `fcntl.flock` on a lock file in `model_dir` (`.lock` for the chief,
`.lock-<task>` for the other tasks of a multi-worker cluster, so that the workers of
one run do not refuse each other while a second run of the same command is refused by
each of them). The kernel releases the lock when its holder exits or dies (kill -9
included), so a killed run never blocks its resume. The file holds the holder's PID,
which the refusal names; it is removed on release, so a completed run leaves none.
"""

import errno
import fcntl
import os

from training.usage import UsageError

LOCK_FILE = ".lock"


def lock_file_name(task=None):
    """The lock file's name: `.lock` for the chief (task None), `.lock-<task>` otherwise.

    Example:

    >>> lock_file_name(), lock_file_name("worker1")
    ('.lock', '.lock-worker1')
    """
    return LOCK_FILE if task is None else f"{LOCK_FILE}-{task}"


class RunDirLock:
    """`with RunDirLock(model_dir):` holds the exclusive lock of `model_dir` or refuses.

    Args:
        model_dir: an existing directory.
        task: None for the chief (or a single process), else a name such as "worker1".

    Raises:
        UsageError (on entering): another live process holds the lock; the message
            names its PID.

    Example:

    >>> os.makedirs("locked_run", exist_ok=True)
    >>> with RunDirLock("locked_run"):
    ...     try:
    ...         RunDirLock("locked_run").acquire()
    ...     except UsageError as error:
    ...         print(str(error).replace(str(os.getpid()), "<pid>"))
    Invalid --model_dir=locked_run: another run (PID <pid>) is training in it; wait for it to end or choose another --model_dir.
    >>> os.listdir("locked_run")  # released: no lock file left
    []
    """

    def __init__(self, model_dir, task=None):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, lock_file_name(task))
        self._fd = None

    def acquire(self):
        """Takes the lock (without waiting) and writes this process's PID into it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise UsageError(
                    f"Invalid --model_dir={self.model_dir}: another run ({self._holder()}) is "
                    "training in it; wait for it to end or choose another --model_dir."
                ) from None
            # A holder releasing the lock removes the file: if ours was removed (or
            # replaced) after we opened it, our lock guards nothing; try again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self):
        """Removes the lock file and releases the lock (nothing if not held)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def _holder(self):
        try:
            with open(self.path) as file:
                pid = file.read().strip()
        except OSError:
            pid = ""
        return f"PID {pid}" if pid.isdigit() else "a process that has not written its PID yet"

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
