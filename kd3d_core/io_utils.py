"""Safe outputs: a file or folder appears complete under its final name or not at all.

Every kd3d output goes through this module, which keeps these promises:
* Atomic: the output is written under a temporary name next to its final path and renamed at the end; a failed
  block removes the temporary (and a replaced output is swapped, never deleted first).
* Permissions follow the umask (mkstemp/mkdtemp alone would give 0600/0700: a node running as another user could
  not read the model); a replaced regular file keeps its mode.
* Only regular files and folders are replaced. A symlink is written through (its target is replaced); a device
  node, FIFO or socket is refused, so `--json /dev/full` can never replace a device.
* Temporaries carry the writer's pid (`.NAME.kd3d-PID-XXXX.tmp` / `.partial`) and an exclusive flock while in
  use. Leftovers of killed runs (lock released) are removed by the next write to the same output; a temporary
  still locked by a live process means another kd3d is writing the same output, which is refused.
* `check_output` checks writability and free space up front, before long work.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kd3d_core.errors import Kd3dError

try:  # POSIX only; elsewhere stale detection falls back to the pid in the name.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

TAG = "kd3d"
_TEMP_ENDINGS = (".tmp", ".partial")
_UNTAGGED_STALE_S = 3600.0
MIN_FREE_BYTES = 1 << 20
_active: set[str] = set()  # temporaries this process is writing now (never swept)


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _resolve_target(path: Path, want_dir: bool) -> Path:
    """The path to replace: symlinks followed; Kd3dError when an existing entry is the wrong kind."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    except NotADirectoryError:
        raise Kd3dError(f"cannot write {path}: a part of its parent path is a file, not a folder") from None
    if want_dir and not stat.S_ISDIR(mode):
        raise Kd3dError(f"cannot write folder {path}: it exists and is not a folder")
    if not want_dir and stat.S_ISDIR(mode):
        raise Kd3dError(f"cannot write file {path}: it is a folder; give a file name")
    if not want_dir and not stat.S_ISREG(mode):
        raise Kd3dError(f"refusing to write {path}: it is a device, pipe or socket, not a regular file")
    return target


def _make_parent(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Kd3dError(f"cannot create folder {folder}: a part of that path is a file, not a folder") from None


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(path: Path, pid: int | None) -> bool:
    """True when a live writer holds this temporary (its flock; the pid where locks cannot be tested)."""
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError:
            return pid is not None and pid != os.getpid() and _pid_alive(pid)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
    return pid is not None and pid != os.getpid() and _pid_alive(pid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_temporaries(target: Path) -> None:
    """Remove leftovers of killed runs writing `target`; Kd3dError if a live process is writing it now."""
    tagged = re.compile(rf"^\.{re.escape(target.name)}\.{TAG}-(\d+)-")
    untagged_prefix = f".{target.name}."
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not name.startswith(untagged_prefix) or not name.endswith(_TEMP_ENDINGS):
            continue
        path = Path(entry.path)
        if os.path.abspath(path) in _active:
            continue
        match = tagged.match(name)
        if match is None:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > _UNTAGGED_STALE_S:
                    _remove(path)
            continue
        pid = int(match.group(1))
        if _in_use(path, pid):
            raise Kd3dError(f"another process (pid {pid}) is writing {target} right now; wait for it to finish "
                            "or choose another output")
        _remove(path)


def _replace(tmp: Path, target: Path) -> None:
    """Move `tmp` onto `target`; an existing folder is renamed aside first and removed after the swap."""
    if target.is_dir() and not target.is_symlink():
        old = target.parent / f".{target.name}.{TAG}-{os.getpid()}-old.partial"
        _remove(old)
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def _staged(target: Path, want_dir: bool, suffix: str) -> Iterator[Path]:
    """A locked temporary next to `target`, swept of stale siblings; removed unless the caller moved it."""
    _make_parent(target.parent)
    prefix = f".{target.name}.{TAG}-{os.getpid()}-"
    try:
        if want_dir:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=target.parent))
            fd = os.open(tmp, os.O_RDONLY)
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix + ".tmp", dir=target.parent)
            tmp = Path(name)
    except OSError as err:  # name the output the user asked for, not our temporary
        raise OSError(err.errno, err.strerror, str(target)) from None
    _active.add(os.path.abspath(tmp))
    try:
        _lock(fd)
        sweep_temporaries(target)
        yield tmp
    finally:
        _active.discard(os.path.abspath(tmp))
        os.close(fd)
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


@contextlib.contextmanager
def atomic_file(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds.

    The file gets mode 0666 minus the umask (or the mode of the regular file it replaces). A symlink at `path`
    is written through; a folder, device, pipe or socket there is refused (Kd3dError).
    """
    target = _resolve_target(Path(path), want_dir=False)
    old_mode = stat.S_IMODE(os.stat(target).st_mode) if target.is_file() else None
    with _staged(target, want_dir=False, suffix=suffix) as tmp:
        yield tmp
        if not tmp.is_file():
            raise Kd3dError(f"writing {path} produced no file")
        os.chmod(tmp, old_mode if old_mode is not None else 0o666 & ~current_umask())
        _replace(tmp, target)


@contextlib.contextmanager
def atomic_dir(path: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; move it to `path` only if the block succeeds.

    Args:
        path: final directory. Must not exist unless `overwrite` (then the old one is replaced at the end).
        overwrite: replace an existing directory.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise Kd3dError(f"output {path} already exists (pass --overwrite to replace it)")
    target = _resolve_target(path, want_dir=True)
    with _staged(target, want_dir=True, suffix="") as tmp:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        _replace(tmp, target)


@contextlib.contextmanager
def staging_dir(path: Path | str) -> Iterator[Path]:
    """A private temporary folder next to `path` (swept, locked, removed at the end) for writers that build an
    output of their own (e.g. a rosbag2 folder) and move it into place with `replace_output`."""
    target = Path(path)
    with _staged(target, want_dir=True, suffix="") as tmp:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp


def replace_output(src: Path | str, dst: Path | str) -> None:
    """Move a finished file or folder onto `dst` (an old folder there is swapped out, then removed)."""
    src, dst = Path(src), Path(dst)
    _replace(src, _resolve_target(dst, want_dir=src.is_dir()))


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def check_output(path: Path | str, need_bytes: int = 0, want_dir: bool = False) -> None:
    """Before long work: Kd3dError unless `path` can be written and its disk has `need_bytes` (+1 MiB) free.

    Checks that the path is not a folder/device where a file is wanted (and vice versa), that no other live
    process is writing it, that the nearest existing parent is a writable folder on a writable file system, and
    the free space there.
    """
    path = Path(path)
    target = _resolve_target(path, want_dir)
    if target.parent.is_dir():
        sweep_temporaries(target)  # leftovers of killed runs go; a live writer of this output is refused now
    folder = path.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise Kd3dError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        fs = os.statvfs(folder)
    except OSError as err:
        raise Kd3dError(f"cannot write {path}: {err.strerror}") from None
    if fs.f_flag & os.ST_RDONLY:
        raise Kd3dError(f"cannot write {path}: {folder} is on a read-only file system; choose another output")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Kd3dError(f"cannot write {path}: no write permission in {folder}; choose another output")
    free = fs.f_bavail * fs.f_frsize
    if free < need_bytes + MIN_FREE_BYTES:
        raise Kd3dError(f"cannot write {path}: only {free / 2**20:.1f} MiB free on its disk, about "
                        f"{(need_bytes + MIN_FREE_BYTES) / 2**20:.1f} MiB needed; free some space or write elsewhere")


def is_disk_full(err: BaseException) -> bool:
    """True for the OSError of a full disk or quota."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
