"""Blob sources for an archive import: ``open_blob`` over an archive member read once,
or over a temp file (a spool) when one blob must go to several registries.

Every read goes through the verifying reader (size cap, digest checked at EOF).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .content import Descriptor
from .digest import VerifyingReader
from .errors import BundleError
from .stores.archive import Member

__all__ = ["OneShot", "SpooledFile", "spool_bytes", "spool_member"]


class OneShot:
    """``open_blob`` over an archive member: its bytes can be read once only.

    Args:
        file: the member's file object.
        where: a human name for errors (archive and member).
    """

    def __init__(self, file: BinaryIO, where: str) -> None:
        self.file = file
        self.where = where
        self.started = False

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """The member as a verifying reader.

        Raises:
            BundleError: the member was read before (a stream cannot be read twice).
        """
        if self.started:
            raise BundleError(f"{self.where}: the upload of {descriptor.digest} was "
                              "interrupted after the archive stream had been read; a stream "
                              "cannot be read twice: run the import again")
        self.started = True
        yield VerifyingReader(self.file, descriptor.digest, descriptor.size, where=self.where)


class SpooledFile:
    """``open_blob`` over a temp file (a blob that goes to more than one registry)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """The spooled file as a verifying reader (can be opened again for a retry)."""
        with open(self.path, "rb") as f:
            yield VerifyingReader(f, descriptor.digest, descriptor.size, where=str(self.path))


def spool_bytes(data: bytes) -> Path:
    """Write ``data`` (a blob held in memory) to a new temp file; its path."""
    fd, path = tempfile.mkstemp(prefix="bundler-blob-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(path)


def spool_member(member: Member, descriptor: Descriptor) -> Path:
    """Copy (verified) a blob that must go to several registries to a temp file.

    Raises:
        IntegrityError: the member does not match ``descriptor`` (no file is left).
    """
    fd, path = tempfile.mkstemp(prefix="bundler-blob-")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in VerifyingReader(member.file, descriptor.digest, descriptor.size,
                                         where=member.name):
                f.write(chunk)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
    return Path(path)
