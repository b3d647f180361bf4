"""Writing files safely: a checked output path and an atomic write.

`atomic_write(path, data)` writes to a temporary file beside `path`, flushes it
to disk and renames it over `path`: a reader sees the old file or the new one,
never a part, and a failed write leaves no file behind (and an existing file
unchanged). Exports, training and the benchmarks write their outputs this way.

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
            a directory, or in a directory that does not exist or is not writable.

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
    return path


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


def atomic_write(path, data):
    """Writes the bytes `data` to `path` atomically (temporary file, fsync, rename).

    The file gets the mode a plain `open(path, "wb")` would give it (0o666 less
    the umask), not the temporary file's 0o600.

    Args:
        path: the file to write; its directory must exist.
        data: bytes-like.

    Raises:
        OSError: if writing fails; the temporary file is removed and an existing
            `path` is left unchanged.

    Example:

    >>> atomic_write("weights.bin", bytes([1, 2, 3]))
    >>> os.path.getsize("weights.bin")
    3
    """
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    handle, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), 0o666 & ~_umask())
            os.fsync(file.fileno())
        os.replace(temporary, os.path.join(directory, base))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
