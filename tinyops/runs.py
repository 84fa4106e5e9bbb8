"""Run directories: claimed by one run at a time, written whole, swapped into place.

A training run writes its directory (``--out``) as one transaction:

1. :func:`check_target` looks at the file system without changing it: the directory, if it exists, is a
   run (replaced only with ``force``) or empty; the nearest existing ancestor is a directory we may
   write in. A run refused here has created nothing.
2. :class:`RunDir` claims the target: it creates the missing parents and takes an exclusive ``flock`` on
   the claim file ``.<name>.lock`` beside the target, which names the run that holds it (pid, host,
   start time). A second run into the same target is refused with that name. The kernel drops the
   lock when its process dies however it dies (SIGKILL included), so the claim of a dead run is simply
   taken over; while holding the claim, a run removes what dead runs left beside the target.
3. The run writes every file into a fresh staging directory ``.<name>.staging-<pid>`` beside the target.
4. :meth:`RunDir.commit` flushes the staging directory to disk and swaps it with the target in one
   atomic ``renameat2(RENAME_EXCHANGE)`` (or, where the system has no exchange, renames the old run
   aside, the new one into place, and restores the old one at the next claim if a crash fell in
   between), then deletes the old run. A crash or kill at any moment leaves either the complete old
   run or the complete new run at the target, never a mix of the two.
5. Leaving the ``with`` block removes the staging directory if the run did not commit, and the claim
   file, on every exit path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

RUN_MARKER = "model.npz"  # a directory holding this file is a run


class RunError(Exception):
    """The run directory cannot be used: one line for the user, the run does not start."""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim: the process, its host, and when it claimed (seconds since the epoch)."""

    pid: int
    host: str
    started: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; move it over ``path`` only if the block succeeds.

    The temporary file is created as an ordinary ``open(path, 'w')`` creates a file (mode 0o666 less the
    umask), so the file that replaces ``path`` has the permissions the user expects."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a broken symlink counts as existing)."""
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def is_run(path: Path) -> bool:
    return (path / RUN_MARKER).is_file()


def check_target(out: str | os.PathLike[str], *, force: bool) -> None:
    """Check that a run can be written to ``out``, changing nothing on disk.

    Raises:
        RunError: ``out`` is a file, a non-empty directory that holds no run, or a run and ``force`` is
            false; the nearest existing ancestor is not a directory (a path under a regular file) or we
            may not create files in it (a read-only directory or file system).
    """
    name = os.fspath(out)
    target = Path(os.path.realpath(out))
    if target.parent == target:
        raise RunError(f"--out {name!r} is the root directory; choose a directory for the run")
    if os.path.lexists(target):
        if not target.is_dir():
            raise RunError(f"--out {name!r} exists and is not a directory")
        if is_run(target):
            if not force:
                raise RunError(
                    f"{name!r} already holds a run ({RUN_MARKER}); choose another --out or pass --force "
                    "(make train: TRAIN_ARGS=--force)"
                )
        elif any(target.iterdir()):
            raise RunError(
                f"--out {name!r} is a directory that holds other files and no run; a run replaces its whole "
                "directory, so choose a new or empty one"
            )
    base = _nearest_existing(target.parent)
    if not base.is_dir():
        raise RunError(f"--out {name!r} cannot be created: {os.fspath(base)!r} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RunError(f"--out {name!r} cannot be created: {os.fspath(base)!r} is not writable")


# ---------------------------------------------------------------------------- the atomic swap

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (and ``root``) to disk."""
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            _fsync_path(Path(dirpath) / f)
        _fsync_path(Path(dirpath))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ---------------------------------------------------------------------------- the claim


class RunDir:
    """Claim ``out`` for one run, give it a staging directory, and swap that into place on commit.

    Use as a context manager::

        check_target(out, force=force)          # before the expensive work: changes nothing
        with RunDir(out, force=force) as run:   # claims out (RunError if another run holds it)
            ... write files into run.staging ...
            run.commit()                        # the new run replaces the old one as a whole

    Leaving the block without :meth:`commit` (an error, Ctrl-C) leaves ``out`` as it was. The claim
    is released and the staging directory removed on every exit path; a claim refused (RunError)
    also removes the parent directories it created.
    """

    def __init__(self, out: str | os.PathLike[str], *, force: bool) -> None:
        self.name = os.fspath(out)
        self.target = Path(os.path.realpath(out))
        self.force = force
        parent, base = self.target.parent, self.target.name
        self.lock_path = parent / f".{base}.lock"
        self.staging = parent / f".{base}.staging-{os.getpid()}"
        self._leftover = re.compile(rf"\.{re.escape(base)}\.(staging|old)-\d+")
        self._fd: int | None = None
        self._created: list[Path] = []
        self.committed = False

    # -- claim and release

    def __enter__(self) -> RunDir:
        try:
            self._makedirs(self.target.parent)
            self._claim()
            self._recover()
            check_target(self.name, force=self.force)  # again, now that no other run can change it
            os.mkdir(self.staging)  # mode 0o777 & ~umask, as any directory the user makes
        except BaseException as exc:
            self._release()
            for d in reversed(self._created):  # only what this claim created, only if still empty
                with contextlib.suppress(OSError):
                    d.rmdir()
            if isinstance(exc, OSError):
                raise RunError(f"cannot write the run to {self.name!r}: {exc.strerror or exc}") from None
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _makedirs(self, d: Path) -> None:
        missing = []
        while not os.path.lexists(d):
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another run made it at the same moment
                m.mkdir()
                self._created.append(m)

    def _claim(self) -> None:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                who = holder.describe() if holder is not None else "a run that is just starting"
                raise RunError(
                    f"--out {self.name!r} is being written by another run ({who}); wait for it to finish "
                    "or choose another --out"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us unlinks the file before it lets go: if the path is gone or names
            # another file now, our lock is on a file nobody else will look at; open the path again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                break
            os.close(fd)
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode() + b"\n", 0)

    def _release(self) -> None:
        if self._fd is not None:
            if not self.committed:
                _remove(self.staging)
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()  # before the lock goes: see _claim
            os.close(self._fd)
            self._fd = None

    def _recover(self) -> None:
        """With the claim held: bring back a run a crash left renamed aside, delete dead runs' staging."""
        leftovers = [p for p in self.target.parent.iterdir() if self._leftover.fullmatch(p.name)]
        olds = sorted((p for p in leftovers if ".old-" in p.name), key=lambda p: p.stat().st_mtime)
        if olds and not os.path.lexists(self.target) and is_run(olds[-1]):
            os.rename(olds[-1], self.target)
        for p in leftovers:
            if os.path.lexists(p):
                _remove(p)

    # -- commit

    def commit(self) -> None:
        """Make the staging directory the run at ``out``, atomically; the old run (if any) is deleted."""
        if self._fd is None or self.committed:
            raise RuntimeError("commit() needs a claimed, uncommitted RunDir")
        _fsync_tree(self.staging)
        if not os.path.lexists(self.target):
            os.rename(self.staging, self.target)
            aside = None
        elif _exchange(self.staging, self.target):
            aside = self.staging  # now holds the old run
        else:
            aside = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
            os.rename(self.target, aside)
            os.rename(self.staging, self.target)
        self.committed = True
        _fsync_path(self.target.parent)
        if aside is not None:
            _remove(aside)


def _read_holder(fd: int) -> Holder | None:
    """The holder written in a claim file; None while the holder has not written it yet."""
    for _ in range(20):  # the holder writes right after it locks: give it a moment
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode())
            return Holder(int(info["pid"]), str(info["host"]), float(info["started"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            time.sleep(0.01)
    return None
