"""Files of a directory bundle, opened without ever leaving it.

A bundle directory came from elsewhere, so its files are not trusted to be files: a
blob that is a symbolic link to ``/dev/zero`` would make a reader hash forever (and an
import upload gigabytes), one linked to a host file would send that file's bytes before
any digest check, a FIFO would block a reader. Here every path under the bundle root is
walked one component at a time with ``O_NOFOLLOW`` (relative to the directory opened
before it), so a symbolic link anywhere under the root is refused; what is found must be
a regular file (not a FIFO, device, socket or directory), and its size is checked
against the descriptor before a byte is read. The root itself may be a symbolic link:
the user named it.

The functions take the root and a relative path, so another blob root (a shared blob
directory) is checked the same way.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import BundleError, SizeMismatchError, UnsafeBundleError

__all__ = ["check_dir_inside", "open_inside", "read_inside", "stat_inside"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISLNK, "Is a symbolic link"), (stat.S_ISFIFO, "Is a FIFO"),
                       (stat.S_ISCHR, "Is a character device"),
                       (stat.S_ISBLK, "Is a block device"), (stat.S_ISSOCK, "Is a socket"),
                       (stat.S_ISDIR, "Is a directory")):
        if test(mode):
            return name
    return "Is not a regular file"


def _refuse(path: Path, kind: str, what: str = "") -> UnsafeBundleError:
    return UnsafeBundleError(f"{path}: cannot read{' ' + what if what else ''}: {kind}; "
                             "refused: the files of a bundle directory must be regular "
                             "files inside it (no symbolic links, FIFOs or devices)")


def _open_parent(root: Path, parts: tuple[str, ...]) -> int | None:
    """The directory ``root/parts[:-1]`` opened without following a link; None if a
    component is missing.

    Raises:
        UnsafeBundleError: a component is a symbolic link or not a directory.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts[:-1]):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                return None
            except OSError as exc:
                where = root.joinpath(*parts[:depth + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                    except OSError:
                        mode = 0
                    raise _refuse(where, _kind(mode)) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_dir_inside(root: Path, relative: str) -> None:
    """Check that ``root/relative`` is reached through directories only (no symbolic
    link on the way); before a writer puts files there.

    Raises:
        UnsafeBundleError: a component is a symbolic link or not a directory.
    """
    fd = _open_parent(root, (*relative.split("/"), ""))
    if fd is not None:
        os.close(fd)


def stat_inside(root: Path, relative: str, *, what: str = "") -> os.stat_result | None:
    """``lstat`` of ``root/relative``, checked to be a regular file inside ``root``.

    Args:
        root: the bundle directory (or another blob root).
        relative: a path under it, ``/``-separated (``blobs/sha256/<hex>``).
        what: what the file is, for messages (``blob sha256:...``).

    Returns:
        The file's stat, or None if it (or a directory on its way) does not exist.

    Raises:
        UnsafeBundleError: the path or a directory on its way is a symbolic link, or the
        file is a FIFO, device, socket or directory.
        BundleError: the path cannot be looked at (no permission, a failing disk).
    """
    parts = tuple(relative.split("/"))
    try:
        parent = _open_parent(root, parts)
        if parent is None:
            return None
        try:
            status = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"{root / relative}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(status.st_mode):
        raise _refuse(root / relative, _kind(status.st_mode), what)
    return status


def open_inside(root: Path, relative: str, *, size: int | None = None,
                limit: int | None = None, digest: str = "", what: str = "") -> BinaryIO:
    """Open ``root/relative`` for reading, refusing anything but a regular file inside
    ``root``, and check its size before a byte is read.

    Args:
        root: the bundle directory (or another blob root).
        relative: a path under it, ``/``-separated.
        size: the size in bytes the descriptor gives, or None.
        limit: the largest size in bytes accepted, or None.
        digest: the expected digest (for the message of a wrong size).
        what: what the file is, for messages (``blob sha256:...``).

    Returns:
        The open file (binary, unbuffered reads are up to the caller).

    Raises:
        FileNotFoundError: it does not exist.
        UnsafeBundleError: a symbolic link on the way, a FIFO, device, socket or directory.
        SizeMismatchError: the file's size is not ``size``.
        BundleError: larger than ``limit``, or it cannot be opened.
    """
    path = root / relative
    if stat_inside(root, relative, what=what) is None:  # a device is never even opened
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    parts = tuple(relative.split("/"))
    try:
        parent = _open_parent(root, parts)
        if parent is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # replaced since the check above
            raise _refuse(path, "Is a symbolic link" if exc.errno == errno.ELOOP
                          else "Is a socket", what) from None
        raise BundleError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise _refuse(path, _kind(status.st_mode), what)
        if size is not None and status.st_size != size:
            raise SizeMismatchError(digest=digest or relative, expected=size,
                                    actual=status.st_size, where=str(path))
        if limit is not None and status.st_size > limit:
            raise BundleError(f"{path}: {status.st_size} bytes, larger than the "
                              f"{limit}-byte limit")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_inside(root: Path, relative: str, *, limit: int) -> bytes | None:
    """The bytes of a small file of the bundle (``oci-layout``, ``index.json``).

    Returns:
        The bytes, or None if the file does not exist.

    Raises:
        UnsafeBundleError, BundleError: as :func:`open_inside`.
    """
    try:
        with open_inside(root, relative, limit=limit) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    if len(data) > limit:  # it grew since it was opened
        raise BundleError(f"{root / relative}: larger than the {limit}-byte limit")
    return data
