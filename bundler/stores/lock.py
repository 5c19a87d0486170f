"""The writer's lock of a bundle: one export at a time into one directory or archive.

Two exports into one bundle directory would each read ``index.json``, add their images
and replace it: the last writer would win and the other's images would silently be
missing. An export therefore holds an advisory ``flock(2)`` lock for its whole run:

- directory bundle: ``DIR/.bundler.lock`` (inside the bundle, so a bundle on a mount
  point whose parent is read-only can be locked; tools reading the layout ignore it);
- archive bundle ``NAME.tar[.zst]`` (and its volumes): ``.NAME.lock`` beside it.

The lock file holds the writer's process id (for the waiting message). It is removed
when the lock is released; a writer that waited for a lock whose file was removed in
the meantime starts over with a new file, so two writers never hold locks on two
different files of one name. The kernel drops the lock when its process dies (even by
``kill -9``): a lock file left behind then is locked afresh by the next writer.

Readers (verify, list, import) take no lock: ``index.json`` is replaced atomically and
a blob gets its name only once complete, so a reader sees the bundle before or after a
writer's run, never half of it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ..errors import BundleError, BundleLockedError
from . import layout
from .layout import LOCK_NAME

__all__ = ["LOCK_NAME", "WriterLock"]

_ATTEMPTS = 100  # a lock file can vanish under a waiter only when its holder ends


def _read_pid(fd: int) -> int | None:
    """The process id written in the lock file, or None."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open lock file ``fd`` is still the file at ``path``."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class WriterLock:
    """An exclusive advisory lock held while a bundle is written (a context manager).

    Args:
        path: the lock file.
        bundle: the bundle's name, for messages.
        wait: wait for another writer to finish; False: raise at once.
        on_wait: called once with a one-line message when the lock is taken and this
            writer starts to wait.
        make_dirs: create the lock file's missing directories (a new bundle directory);
            they are removed again on release if still empty.

    Raises (on entering):
        BundleLockedError: the lock is held and ``wait`` is False.
        BundleError: the lock file cannot be created.
    """

    def __init__(self, path: Path, bundle: str, *, wait: bool = True,
                 on_wait: Callable[[str], None] | None = None, make_dirs: bool = False) -> None:
        self.path = path
        self.bundle = bundle
        self.wait = wait
        self.on_wait = on_wait
        self.make_dirs = make_dirs
        self._fd: int | None = None
        self._made: list[Path] = []

    @classmethod
    def for_output(cls, output: str | os.PathLike[str], *, directory: bool, wait: bool = True,
                   on_wait: Callable[[str], None] | None = None) -> WriterLock:
        """The lock of a bundle directory (``DIR/.bundler.lock``) or of an archive
        (``.NAME.lock`` beside it)."""
        out = Path(output)
        if directory:
            return cls(out / LOCK_NAME, str(out), wait=wait, on_wait=on_wait, make_dirs=True)
        return cls(out.parent / f".{out.name}.lock", str(out), wait=wait, on_wait=on_wait)

    def _open(self) -> int:
        """Open (create) the lock file; its directory is made first if allowed."""
        folder = self.path.parent
        if self.make_dirs:
            if folder.exists() and not folder.is_dir():
                raise BundleError(f"{folder}: exists and is not a directory; a directory "
                                  "bundle needs a directory (name an archive NAME.tar or "
                                  "NAME.tar.zst, or choose another output)")
            missing = [p for p in (folder, *folder.parents) if not p.exists()]
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if missing:  # the new directory entry survives a crash
                    layout.fsync_dir(folder.parent)
            except OSError as exc:
                raise BundleError(f"{folder}: cannot create the bundle directory: "
                                  f"{exc.strerror or exc}") from exc
            self._made.extend(p for p in missing if p not in self._made)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                           0o666)
        except FileNotFoundError:
            if self.make_dirs:
                raise  # the directory was removed under us: try again
            raise BundleError(f"{folder}: no such directory") from None
        except OSError as exc:
            raise BundleError(f"{self.bundle}: cannot create the lock file {self.path}: "
                              f"{exc.strerror or exc}") from exc

    def acquire(self) -> None:
        """Take the lock (waiting for another writer unless ``wait`` is False).

        Raises:
            BundleLockedError: held by another writer and ``wait`` is False.
            BundleError: the lock file cannot be created.
        """
        told = False
        for _ in range(_ATTEMPTS):
            try:
                fd = self._open()
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pid = _read_pid(fd)
                    by = f" (pid {pid})" if pid else ""
                    if not self.wait:
                        raise BundleLockedError(
                            f"{self.bundle}: another bundler{by} is writing this bundle "
                            f"(lock {self.path}); wait for it to finish, or run without "
                            "--no-wait to wait for it", pid=pid) from None
                    if self.on_wait is not None and not told:
                        self.on_wait(f"waiting for another bundler writing {self.bundle}"
                                     f"{by} ...")
                        told = True
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if not _same_file(fd, self.path):  # its holder removed it: start over
                    os.close(fd)
                    continue
                try:  # the pid only names the writer to a waiter: a full disk is no error
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                except OSError:
                    pass
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return
        raise BundleError(f"{self.bundle}: could not take the lock {self.path} "
                          f"(it was replaced {_ATTEMPTS} times)")

    def release(self) -> None:
        """Remove the lock file and drop the lock; then the directories this lock made,
        if they are empty (a failed first export leaves no directory behind)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        for folder in sorted(self._made, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: it holds a bundle (or something else) now
                break
        self._made = []

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
