"""Safe outputs: atomic, umask-honouring, never replacing devices, cleaning up killed runs, refusing concurrency."""
import os
import stat
import subprocess
import sys
import time

import pytest

from kd3d_core.errors import Kd3dError
from kd3d_core.io_utils import atomic_dir, atomic_file, atomic_write_text, check_output, current_umask


def _temps(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".partial"))]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_files_and_folders_follow_the_umask(tmp_path, umask_027):
    assert current_umask() == 0o027
    atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("1")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
    os.chmod(tmp_path / "a.txt", 0o604)  # a replaced file keeps its own mode
    atomic_write_text(tmp_path / "a.txt", "y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o604


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "scene") as tmp:
            (tmp / "x").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_symlink_is_written_through_and_devices_refused(tmp_path):
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to("real.json")
    atomic_write_text(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(Kd3dError, match="not a regular file"):
        atomic_write_text(tmp_path / "pipe", "x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    with pytest.raises(Kd3dError, match="is a folder"):
        atomic_write_text(tmp_path, "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(Kd3dError, match="is a file, not a folder"):
        atomic_write_text(tmp_path / "file" / "out.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link.json", "pipe", "real.json"]


def test_devnull_is_never_replaced():
    with pytest.raises(Kd3dError, match="device, pipe or socket"):
        atomic_write_text("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_leftovers_of_killed_runs_are_swept(tmp_path):
    (tmp_path / ".r.json.kd3d-999999-ab12cd.tmp").write_text("dead pid")
    old = tmp_path / ".r.json.zz99yy88.tmp"
    old.write_text("older kd3d, 2 h ago")
    os.utime(old, (time.time() - 7200,) * 2)
    young = tmp_path / ".other.json.zz99yy88.tmp"
    young.write_text("not ours to judge")
    (tmp_path / ".scene.kd3d-999999-ab12cd.partial").mkdir()
    atomic_write_text(tmp_path / "r.json", "{}")
    with atomic_dir(tmp_path / "scene") as tmp:
        (tmp / "x").write_text("1")
    assert _temps(tmp_path) == [young.name]


_HOLDER = """
import fcntl, os, sys, time
path = os.path.join(sys.argv[1], f".r.json.kd3d-{os.getpid()}-zz99yy.tmp")
fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print(path, flush=True)
time.sleep(30)
"""


def test_concurrent_writer_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        with pytest.raises(Kd3dError, match=rf"another process \(pid {holder.pid}\) is writing"):
            atomic_write_text(tmp_path / "r.json", "{}")
        with pytest.raises(Kd3dError, match="another process"):
            check_output(tmp_path / "r.json")
    finally:
        holder.kill()
        holder.wait()
    atomic_write_text(tmp_path / "r.json", "{}")  # the holder died: its temporary is stale now
    assert _temps(tmp_path) == [] and (tmp_path / "r.json").read_text() == "{}"


def test_check_output(tmp_path):
    check_output(tmp_path / "new" / "deeper" / "m.kd3d", need_bytes=1000)
    with pytest.raises(Kd3dError, match="MiB free"):
        check_output(tmp_path / "m.kd3d", need_bytes=1 << 60)
    with pytest.raises(Kd3dError, match="is a folder"):
        check_output(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(Kd3dError, match="not a folder"):
        check_output(tmp_path / "f" / "m.kd3d")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_and_read_only_disks(tmp_path):
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)]).returncode != 0:
        pytest.skip("tmpfs mount refused in this container")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
        with pytest.raises(OSError) as info:
            atomic_write_text(full / "big.txt", "x" * (3 << 20))
        assert info.value.errno == 28 and os.listdir(full) == []  # ENOSPC, nothing left behind
        with pytest.raises(Kd3dError, match="read-only"):
            check_output(ro / "m.kd3d")
        with pytest.raises(OSError) as info:
            atomic_write_text(ro / "r.json", "{}")
        assert info.value.filename == str(ro / "r.json")
    finally:
        subprocess.run(["umount", "-l", str(full)])
        subprocess.run(["umount", "-l", str(ro)])
