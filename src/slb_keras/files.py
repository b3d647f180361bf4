"""Writing files safely: a checked output path and an atomic write.

`atomic_write(path, data)` writes to a temporary file beside `path`, flushes it
to disk and renames it over `path`: a reader sees the old file or the new one,
never a part, and a failed write leaves no file behind (and an existing file
unchanged); its error (`OutputWriteError`) names `path`, not the temporary file.
Exports, training and the benchmarks write their outputs this way.

Example:

>>> path = check_output_path("report.json", "out")
>>> atomic_write(path, b'{"ok": true}')
>>> open(path, "rb").read()
b'{"ok": true}'
"""

import contextlib
import os
import tempfile


def check_output_path(path, name):
    """The absolute path of a file that can be written, or a ValueError.

    Args:
        path: a str or path-like naming a file (not a directory) in an existing,
            writable directory.
        name: the argument name used in the error message (e.g. "path", "--out").

    Returns:
        `os.path.abspath(path)` as a str.

    Raises:
        ValueError: naming `name` and `path`, if `path` is empty, not a path,
            a directory, or in a directory that does not exist or where no file
            can be created (tried: a temporary file, removed at once; then an
            `OutputWriteError`).

    Example:

    >>> check_output_path("", "out")
    Traceback (most recent call last):
    ...
    ValueError: Invalid out='': expected a file path.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"Invalid {name}={path!r}: expected a file path.")
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if os.path.isdir(path):
        raise ValueError(f"Invalid {name}={path!r}: it is a directory; expected a file path.")
    if not os.path.isdir(parent):
        raise ValueError(
            f"Invalid {name}={path!r}: the directory {parent!r} does not exist."
        )
    if not os.access(parent, os.W_OK):
        raise ValueError(f"Invalid {name}={path!r}: the directory {parent!r} is not writable.")
    try:  # what `atomic_write` will do there (os.access says yes to root everywhere)
        handle, probe = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputWriteError(name, path, error) from None
    return path


class OutputWriteError(OSError, ValueError):
    """An output file that could not be written, named by the caller's path.

    Both an `OSError` (its `errno`, `strerror` and `filename`, the path the caller
    passed, never the hidden temporary file `atomic_write` writes first) and a
    `ValueError` naming the argument, as the exports raise for a bad path.

    Example:

    >>> try:
    ...     atomic_write("/no/such/dir/model.tflite", b"", name="out")
    ... except OutputWriteError as error:
    ...     print(error)
    ...     print(isinstance(error, OSError), isinstance(error, ValueError), error.filename)
    Invalid out='/no/such/dir/model.tflite': the file cannot be written there (No such file or directory).
    True True /no/such/dir/model.tflite
    """

    def __init__(self, name, path, error):
        super().__init__(error.errno, error.strerror or str(error), path)
        self.message = (
            f"Invalid {name}={path!r}: the file cannot be written there "
            f"({error.strerror or str(error) or type(error).__name__})."
        )

    def __str__(self):
        return self.message

    def __reduce__(self):
        return (_rebuild_output_error, (self.message, self.errno, self.strerror, self.filename))


def _rebuild_output_error(message, errno, strerror, filename):
    error = OutputWriteError.__new__(OutputWriteError)
    OSError.__init__(error, errno, strerror, filename)
    error.message = message
    return error


def _umask():
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no other way: set and restore at once
    os.umask(mask)
    return mask


def atomic_write(path, data, name="path"):
    """Writes the bytes `data` to `path` atomically (temporary file, fsync, rename).

    The file gets the mode a plain `open(path, "wb")` would give it (0o666 less
    the umask), not the temporary file's 0o600.

    Args:
        path: the file to write; its directory must exist.
        data: bytes-like.
        name: the argument name the error message gives `path` under.

    Raises:
        OutputWriteError: (an OSError and a ValueError) if writing fails, naming
            `path` as given; the temporary file is removed and an existing `path`
            is left unchanged.

    Example:

    >>> atomic_write("weights.bin", bytes([1, 2, 3]))
    >>> os.path.getsize("weights.bin")
    3
    """
    given = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(given))
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise OutputWriteError(name, given, error) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), 0o666 & ~_umask())
            os.fsync(file.fileno())
        os.replace(temporary, os.path.join(directory, base))
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise OutputWriteError(name, given, error) from None
        raise
