"""Writing output files safely: unique temporary names, atomic renames, one-line errors.

Every file the harness writes next to a user's results (splits, reports, caches) goes
through `atomic_write`: the bytes go to a temporary file with a unique name in the
same folder (two processes never share one), which is renamed over the target only
when complete, so a crash, a full disk or a concurrent writer never leaves a
half-written file.  Failures are a `StoreError` that names the file and says what to
do (`output_error`).

Links: the harness never follows a symbolic link for a file it writes, truncates or locks
(locks, the results store and its side files, caches, reports, figures, checkpoints,
split files).  `check_target` refuses a target that is a link, or that exists and is not
a regular file (a FIFO or a device would block or be written into), in one line; lock
files are opened with `O_NOFOLLOW` (`open_lock_file`), so a link planted between the
check and the open is refused by the kernel too.  Folders above the file may be links
(an `--out` that is a link to a bigger disk is common); the last component may not.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from agiqa_bench.errors import ConfigError, StoreError


def output_error(path: Path, action: str, exc: BaseException) -> StoreError:
    """One line for a failed write or read of an output file: what, where, why, and what to do."""
    why = " ".join(str(exc).split()) or type(exc).__name__
    full = getattr(exc, "errno", None) == errno.ENOSPC or "full" in why.lower()
    denied = (isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EROFS)
              or "readonly" in why.lower() or "read-only" in why.lower())
    if full:
        hint = "free disk space, then rerun the same command: finished jobs are kept and are not redone"
    elif denied:
        hint = "choose a writable --out folder (or fix its permissions)"
    else:
        hint = "check the file and the disk; finished jobs stay in the store"
    return StoreError(f"cannot {action} {path}: {why}; {hint}")


def check_target(path: str | Path, what: str = "write") -> Path:
    """`path` unless it is a symbolic link or an existing non-regular file (FIFO, device, folder): then a one-line
    StoreError.  A missing file is fine (it will be created)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise output_error(path, what, exc) from None
    if stat.S_ISLNK(st.st_mode):
        raise StoreError(f"refusing to {what} {path}: it is a symbolic link (agiqa-bench never writes through links; "
                         f"remove the link or choose another --out)")
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, socket or device)"
        raise StoreError(f"refusing to {what} {path}: it is {kind}; remove it or choose another --out")
    return path


def open_lock_file(path: str | Path, what: str = "lock") -> int:
    """A file descriptor of the lock file `path` (created if needed), opened without following a link and
    without blocking on a FIFO; refused in one line unless it is a regular file."""
    path = check_target(path, what)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            check_target(path, what)  # says "symbolic link"
        raise output_error(path, what, exc) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        check_target(path, what)
        raise StoreError(f"refusing to {what} {path}: not a regular file")
    os.set_blocking(fd, True)
    return fd


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], *, what: str = "write") -> Path:
    """Call `write(file)` on a unique temporary file beside `path`, then rename it to `path` (never through a
    link: `check_target`)."""
    path = Path(path)
    tmp = None
    check_target(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
        tmp = None
        return path
    except OSError as exc:
        raise output_error(path, what, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str, *, what: str = "write") -> Path:
    """`text` as UTF-8; a character UTF-8 cannot hold (the surrogates Python uses for the bytes of a file name
    that is not valid UTF-8) is written as its escape, `\\udcff`, so a report always writes and stays valid UTF-8."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8", "backslashreplace")), what=what)


class RunLock:
    """`<out>/.agiqa-bench.lock`: one run per output folder at a time (an advisory lock, released on exit
    and by the kernel when the process dies, so a killed run never leaves a stale lock)."""

    def __init__(self, out: Path, *, wait: bool = False):
        self.path = Path(out) / ".agiqa-bench.lock"
        self.wait = wait
        self._fh = None

    def __enter__(self) -> "RunLock":
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(self.path.parent, "use the output folder", exc) from None
        self._fh = os.fdopen(open_lock_file(self.path, "lock the output folder with"), "r+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise ConfigError(f"{self.path.parent} is in use by another agiqa-bench run ({holder}); wait for it to "
                              "finish, pass --wait to queue behind it, or use another --out") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()} on {os.uname().nodename}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
