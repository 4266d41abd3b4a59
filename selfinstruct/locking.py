"""One writer at a time: an exclusive OS lock on a run directory or an output file.

`flock` locks belong to the open file, so the kernel drops them when the process ends in any way,
SIGKILL included: a lock is never left stale. The lock file of a directory stays in it (removing
it would let a process that opened it just before lock a file nobody else sees). The lock file
beside an output file is removed when the job ends: a job that writes a file refuses one that
exists, so a process that locks the removed file then finds the output there and stops.
The holder's PID is read from /proc/locks where there is one, else from the lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selfinstruct.errors import UserError

LOCK_NAME = ".selfinstruct.lock"


def lock_file_for(target: Path) -> Path:
    """The lock of a directory is a file inside it; the lock of a file is a hidden file beside it."""
    target = Path(target)
    return target / LOCK_NAME if target.is_dir() else target.with_name(f".{target.name}.lock")


@contextmanager
def exclusive(target: Path, what: str = "") -> Iterator[None]:
    """Hold the lock of `target` (a directory or a file path) for the block.

    A target another process holds is a UserError naming that process; nothing is written then.
    """
    path = lock_file_for(target)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"{path}: cannot create the lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        by = f"process {holder}" if holder else "another process"
        raise UserError(
            f"{target}: in use by {by} (selfinstruct {what or 'job'}) — wait for it to end or stop it; "
            "nothing was changed"
        ) from None
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the PID is a courtesy for other processes; the lock is what counts
        yield
    finally:
        if path.name != LOCK_NAME:
            with contextlib.suppress(OSError):
                path.unlink()
        os.close(fd)


def _holder(fd: int) -> int | None:
    """PID of the process holding a flock on the file open as fd."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == inode:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None
