"""One line for every failure: what the CLI prints when something other than a Kd3dError escapes a command.

Library code raises Kd3dError with a clear message wherever it can check first. What cannot be checked cheaply
in advance (a disk filling up half way, a read-only mount, OpenCV refusing a corrupt image, the machine running
out of memory, a bug) arrives here as a low-level exception; `describe_failure` turns it into one line that
says what happened and what to do. Set KD3D_DEBUG=1 to get the Python traceback instead (see kd3d_core.cli).
"""
from __future__ import annotations

import errno
import os

DEBUG_ENV = "KD3D_DEBUG"
_MAX_DETAIL = 300

# errno -> (what happened, what to do). `{path}` is the file the OS complained about.
_OS_HINTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device while writing {path}",
                   "free some disk space or write the output somewhere else"),
    errno.EDQUOT: ("disk quota exceeded while writing {path}", "free some space or write somewhere else"),
    errno.EROFS: ("{path} is on a read-only file system", "write the output to a writable folder"),
    errno.EACCES: ("permission denied: {path}", "check the file's permissions or choose another path"),
    errno.EPERM: ("operation not permitted: {path}", "check the file's permissions or choose another path"),
    errno.EISDIR: ("{path} is a folder, but a file is needed there", "give a file name, not a folder"),
    errno.ENOTDIR: ("a part of {path} is a file, not a folder", "check the path"),
    errno.ENOENT: ("{path} does not exist", "check the path"),
    errno.EEXIST: ("{path} already exists", "remove it or choose another path"),
    errno.ENAMETOOLONG: ("the path {path} is too long", "use a shorter path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) or process fewer files at once"),
    errno.EIO: ("input/output error on {path}", "the disk or network share may be failing; check it"),
    errno.ENXIO: ("{path} is not a usable device", "write to a regular file"),
}


def one_line(text: object, limit: int = _MAX_DETAIL) -> str:
    """`text` as a single line of at most `limit` characters (white space runs collapsed)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe_os_error(err: OSError) -> str:
    path = err.filename if err.filename is not None else "a file"
    if err.filename2 is not None:
        path = f"{err.filename} -> {err.filename2}"
    what, hint = _OS_HINTS.get(err.errno or -1, (None, None))
    if what is None:
        reason = err.strerror or one_line(err) or type(err).__name__
        return f"{reason} ({path}); check the path and the disk"
    return f"{what.format(path=path)}; {hint}"


def _is_cv2_error(err: BaseException) -> bool:
    return type(err).__module__.startswith("cv2") and type(err).__name__ == "error"


def describe_failure(err: BaseException) -> str:
    """One line (no newline) saying what went wrong and what to do, for any exception."""
    if isinstance(err, OSError):
        return _describe_os_error(err)
    if isinstance(err, MemoryError):
        return ("out of memory; use smaller images, a smaller --batch-size or fewer frames, or a machine with "
                "more memory")
    if isinstance(err, RecursionError):
        return "an input file is nested too deeply to read (a corrupt or hostile file?); check the inputs"
    if _is_cv2_error(err):
        detail = getattr(err, "err", None) or str(err)
        return (f"OpenCV could not process an image ({one_line(detail, 160)}); the image may be corrupt or too "
                "large")
    name = type(err).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(err).lower():
        return "the GPU ran out of memory; use --device cpu, a smaller --batch-size or smaller images"
    detail = one_line(err, 200) or "no details"
    return (f"unexpected {name}: {detail} (a bad input kd3d did not check, or a kd3d bug; rerun with "
            f"{DEBUG_ENV}=1 for a traceback and report it)")


def debug_enabled() -> bool:
    """True when the user asked for tracebacks (KD3D_DEBUG set to anything but '', 0, false, no)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
