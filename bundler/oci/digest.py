"""Digests and the one verifying reader every blob read goes through.

Spec: image-spec ``descriptor.md`` ("Digests"): ``algorithm ":" encoded``, with the
registered algorithms ``sha256`` (64 lowercase hex) and ``sha512`` (128 lowercase hex).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from ..errors import DigestMismatchError, InvalidReferenceError, SizeMismatchError

__all__ = ["CHUNK_SIZE", "Digest", "Hasher", "VerifyingReader", "sha256_digest"]

#: Default read size for blob streams, in bytes.
CHUNK_SIZE = 1 << 20

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


class Hasher(Protocol):
    """The part of a ``hashlib`` object the reader uses."""

    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest such as ``sha256:6c3c...``; ``str()`` is the canonical form.

    Attributes:
        algorithm: ``sha256`` or ``sha512``.
        hex: the lowercase hex encoding of the hash.

    Spec: image-spec descriptor.md, "Digests".
    """

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        want = _ALGORITHMS.get(self.algorithm)
        text = f"{self.algorithm}:{self.hex}"
        if want is None:
            raise InvalidReferenceError(text, f"unsupported digest algorithm {self.algorithm!r}")
        if len(self.hex) != want or not re.fullmatch(r"[0-9a-f]+", self.hex):
            raise InvalidReferenceError(
                text, f"a {self.algorithm} digest has {want} lowercase hex characters"
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:hex``.

        Raises:
            InvalidReferenceError: the text is not a digest of a supported algorithm.
        """
        if not isinstance(text, str) or not _GRAMMAR.fullmatch(text):
            raise InvalidReferenceError(str(text), "a digest looks like sha256:<64 hex>")
        algorithm, _, encoded = text.partition(":")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data`` (bytes held in memory: manifests, small configs)."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        """A fresh ``hashlib`` object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        """``sha256:`` and the first 12 hex characters, for tables and logs."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def sha256_digest(data: bytes) -> Digest:
    """Shorthand for ``Digest.of(data)``."""
    return Digest.of(data)


class VerifyingReader:
    """Stream a blob while checking its size and digest; raise before the last bytes.

    Wraps a binary file object or an iterable of ``bytes`` chunks. Use ``read(n)`` as a
    file, or iterate for chunks. The final bytes are released only after the digest and
    size have been checked, so a consumer that writes or uploads what it receives never
    completes a blob with wrong content.

    Args:
        source: a binary file object (``read(n)``) or an iterable of bytes chunks.
        digest: the expected digest.
        size: the expected size in bytes, or None if unknown.
        where: a name for messages (a path or a URL without query).
        hasher: a hash state that already covers ``offset`` bytes (resumed transfers).
        offset: bytes already hashed before ``source`` starts.
        chunk_size: chunk size in bytes when iterating a file object.

    Raises (while reading):
        SizeMismatchError: more bytes than ``size``, or EOF before ``size``.
        DigestMismatchError: all bytes read but the hash differs.
    """

    def __init__(
        self,
        source: BinaryIO | Iterable[bytes],
        digest: Digest,
        size: int | None,
        *,
        where: str = "",
        hasher: Hasher | None = None,
        offset: int = 0,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.digest = digest
        self.size = size
        self.where = where
        self.hasher = hasher if hasher is not None else digest.hasher()
        self.count = offset
        self.chunk_size = chunk_size
        self._file = source if hasattr(source, "read") else None
        self._iter: Iterator[bytes] | None = None if self._file else iter(source)  # type: ignore[arg-type]
        self._buffer = b""
        self._held = b""
        self._done = False

    # -- checks -----------------------------------------------------------------
    def _account(self, data: bytes) -> None:
        self.hasher.update(data)
        self.count += len(data)
        if self.size is not None and self.count > self.size:
            raise SizeMismatchError(
                digest=str(self.digest), expected=self.size, actual=self.count, where=self.where
            )

    def _finish(self) -> None:
        self._done = True
        if self.size is not None and self.count != self.size:
            raise SizeMismatchError(
                digest=str(self.digest), expected=self.size, actual=self.count, where=self.where
            )
        actual = f"{self.digest.algorithm}:{self.hasher.hexdigest()}"
        if actual != str(self.digest):
            raise DigestMismatchError(expected=str(self.digest), actual=actual, where=self.where)

    # -- source access -------------------------------------------------------------
    def _pull(self, n: int) -> bytes:
        """Up to ``n`` bytes from the source (fewer only at EOF or a chunk boundary)."""
        if self._file is not None:
            return self._file.read(n)
        if not self._buffer:
            for chunk in self._iter:  # type: ignore[union-attr]
                if chunk:
                    self._buffer = chunk
                    break
            else:
                return b""
        if n >= len(self._buffer):
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    # -- consumer API ----------------------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all remaining if ``n < 0``); ``b""`` at the end."""
        if self._done:
            return b""
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(self.chunk_size), b""))
        parts: list[bytes] = []
        want = n
        while want > 0:
            data = self._pull(want)
            if not data:
                self._finish()
                break
            self._account(data)
            parts.append(data)
            want -= len(data)
            if self.size is not None and self.count == self.size:
                extra = self._pull(1)  # the source may hold more than the descriptor says
                if extra:
                    self._account(extra)
                self._finish()
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __iter__(self) -> Iterator[bytes]:
        if self._file is not None and self.size is not None:
            while chunk := self.read(self.chunk_size):
                yield chunk
            return
        if self._file is not None:
            # unknown size: EOF shows only on the next read, so hold one chunk back
            pending = b""
            while chunk := self.read(self.chunk_size):
                if pending:
                    yield pending
                pending = chunk
            if pending:
                yield pending
            return
        held = b""
        for chunk in self._iter:  # type: ignore[union-attr]
            if not chunk:
                continue
            self._account(chunk)
            if held:
                yield held
            held = chunk
        self._finish()
        if held:
            yield held
