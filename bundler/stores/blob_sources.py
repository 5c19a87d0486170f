"""Blob sources for an archive import: ``open_blob`` over an archive member read once,
over bytes held in memory, or over a member copied to a temp file as it is first read
(a blob that goes to more than one repository).

Every read goes through the verifying reader (size cap, digest checked at EOF).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import BundleError
from ..oci.content import Descriptor
from ..oci.digest import CHUNK_SIZE, VerifyingReader

__all__ = ["InMemory", "OneShot", "Teed"]


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


class InMemory:
    """``open_blob`` over a blob held in memory (opened as often as needed).

    Args:
        data: the blob's bytes.
        where: a human name for errors.
    """

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.where = where

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """The bytes as a verifying reader."""
        yield VerifyingReader([self.data], descriptor.digest, descriptor.size, where=self.where)


class Teed:
    """``open_blob`` over an archive member that may be read more than once.

    The first opening streams the member, copying every byte read to a temp file; a
    later opening (another repository whose mount was refused, a restarted upload) first
    copies what is left of the member, then reads the temp file. Call :meth:`close`.

    Args:
        file: the member's file object.
        where: a human name for errors (archive and member).

    Raises:
        BundleError: the temp file cannot be created.
    """

    def __init__(self, file: BinaryIO, where: str) -> None:
        self.where = where
        self._member = file
        try:
            fd, path = tempfile.mkstemp(prefix="bundler-blob-")
        except OSError as exc:
            raise BundleError(f"{where}: cannot create a temp file: {exc}") from exc
        self.path = Path(path)
        self._copy = os.fdopen(fd, "wb")
        self._started = False

    def read(self, n: int = -1) -> bytes:
        """Read from the member, copying to the temp file."""
        data = self._member.read(n)
        if data:
            self._write(data)
        return data

    def _write(self, data: bytes) -> None:
        try:
            self._copy.write(data)
        except OSError as exc:
            raise BundleError(f"{self.where}: cannot write the temp file {self.path}: "
                              f"{exc}") from exc

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """The member (first time) or its copy (later) as a verifying reader."""
        if not self._started:
            self._started = True
            yield VerifyingReader(self, descriptor.digest, descriptor.size, where=self.where)
            return
        while data := self._member.read(CHUNK_SIZE):
            self._write(data)
        try:
            self._copy.flush()
        except OSError as exc:
            raise BundleError(f"{self.where}: cannot write the temp file {self.path}: "
                              f"{exc}") from exc
        with open(self.path, "rb") as f:
            yield VerifyingReader(f, descriptor.digest, descriptor.size, where=self.where)

    def close(self) -> None:
        """Remove the temp file."""
        self._copy.close()
        self.path.unlink(missing_ok=True)
