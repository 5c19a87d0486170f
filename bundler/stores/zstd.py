"""Zstandard frames decoded one block at a time, with a cap on the decompression ratio.

Spec: RFC 8878 (Zstandard): 3.1.1 frames and blocks, 3.1.2 skippable frames.
"""

from __future__ import annotations

from typing import BinaryIO

import zstandard

from ..errors import UnsafeArchiveError

__all__ = ["RATIO_ALLOWANCE", "ZSTD_MAGIC", "ZstdFrames", "is_skippable"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: A skippable frame (RFC 8878, 3.1.2): magic 0x184D2A50..0x184D2A5F (little endian),
#: then a 4-byte little-endian size, then that many bytes that decoders ignore.
_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
_SKIPPABLE_HEADER = 8
_MAX_FRAME_HEADER = 18  # RFC 8878 3.1.1.1: 4-byte magic, then 2 to 14 bytes
_READ_SIZE = 1 << 20
#: Bytes that members may decode beyond their ratio cap, in all, per archive: small
#: members of zeros, tar headers and padding, the end of the archive.
RATIO_ALLOWANCE = 64 << 20


def is_skippable(magic: bytes | memoryview) -> bool:
    """True for the 4-byte magic number of a zstd skippable frame (0x184D2A5?)."""
    return (len(magic) >= 4 and 0x50 <= magic[0] <= 0x5F
            and bytes(magic[1:4]) == _SKIPPABLE_TAIL)


class ZstdFrames:
    """Decode zstd frames one block at a time; stop quietly at bytes that are not a frame.

    Each block (at most 128 KiB of output, RFC 8878 3.1.1.2) goes to the decoder on its
    own, so one call's output stays small however well the input compresses, and time
    and memory stay linear in the output. Skippable frames (written by ``pzstd`` and the
    seekable format) are passed over. ``cat NAME.*`` also sends ``NAME.sha256`` after the
    volumes: such trailing data after the last frame is ignored.

    The decompression ratio is watched per period (:meth:`period`, one per archive
    member): what a period decodes beyond ``max_ratio`` times the compressed bytes it
    read is its excess; once the excesses of all periods pass :data:`RATIO_ALLOWANCE`,
    :class:`UnsafeArchiveError` is raised. Decoding thus costs at most ``max_ratio``
    times the input plus the allowance, and no member borrows from another's ratio.

    Args:
        source: the compressed stream.
        max_ratio: decompressed bytes allowed per compressed byte in one period.
        where: the archive's name for messages.
    """

    def __init__(self, source: BinaryIO, max_ratio: int, where: str) -> None:
        self._source = source
        self._dctx = zstandard.ZstdDecompressor()
        self._obj: zstandard.ZstdDecompressionObj | None = None
        self._buf = bytearray()
        self._pos = 0  # start of the unread input in _buf
        self._eof = False  # the source has ended
        self._ended = False  # no more frames
        self._state = "between"  # between | skip | blocks | checksum
        self._skip = 0  # bytes of a skippable frame still to pass over
        self._checksum = False  # the frame ends with a 4-byte checksum
        self._out = memoryview(b"")
        self.consumed = 0  # compressed bytes taken
        self.produced = 0  # decompressed bytes made
        self.max_ratio = max_ratio
        self.where = where
        self._base = (0, 0)
        self._period = "the archive's first member"
        self._spent = 0  # excess of the periods before this one

    def _excess(self) -> int:
        made = self.produced - self._base[0]
        taken = self.consumed - self._base[1]
        return max(0, made - self.max_ratio * taken)

    def period(self, name: str) -> None:
        """Start watching the ratio of a new member (``name`` is used in the message)."""
        self._spent += self._excess()
        self._base = (self.produced, self.consumed)
        self._period = name

    def _available(self, n: int) -> bool:
        """Read from the source until ``n`` input bytes are at hand; False at its end."""
        while len(self._buf) - self._pos < n and not self._eof:
            data = self._source.read(max(_READ_SIZE, n))
            if not data:
                self._eof = True
                break
            del self._buf[: self._pos]
            self._pos = 0
            self._buf += data
        return len(self._buf) - self._pos >= n

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[self._pos: self._pos + n])
        self._pos += n
        self.consumed += n
        return data

    def _block(self) -> bytes | None:
        """Decode the next piece (a frame header, a block, a checksum); None at the end."""
        while True:
            if self._state == "skip":
                if not self._available(1):
                    raise EOFError("the zstd stream ends inside a skippable frame")
                count = min(self._skip, len(self._buf) - self._pos)
                self._pos += count
                self.consumed += count
                self._skip -= count
                if not self._skip:
                    self._state = "between"
                continue
            if self._state == "between":
                if not self._available(4):
                    self._ended = True  # the end, or a few trailing bytes
                    return None
                magic = self._buf[self._pos: self._pos + 4]
                if is_skippable(magic):
                    if not self._available(_SKIPPABLE_HEADER):
                        raise EOFError("the zstd stream ends inside a skippable frame")
                    self._skip = int.from_bytes(self._take(_SKIPPABLE_HEADER)[4:], "little")
                    self._state = "skip" if self._skip else "between"
                    continue
                if magic != ZSTD_MAGIC:
                    self._ended = True  # trailing data (e.g. the checksum file)
                    return None
                self._available(_MAX_FRAME_HEADER)
                head = bytes(self._buf[self._pos: self._pos + _MAX_FRAME_HEADER])
                size = zstandard.frame_header_size(head)
                if len(head) < size:
                    raise EOFError("the zstd stream ends inside a frame header")
                self._checksum = zstandard.get_frame_parameters(head[:size]).has_checksum
                self._obj = self._dctx.decompressobj()
                self._state = "blocks"
                return self._obj.decompress(self._take(size))
            assert self._obj is not None
            if self._state == "checksum":
                if not self._available(4):
                    raise EOFError("the zstd stream ends inside a frame")
                out = self._obj.decompress(self._take(4))
                self._end_frame()
                return out
            if not self._available(3):
                raise EOFError("the zstd stream ends inside a frame")
            header = int.from_bytes(self._buf[self._pos: self._pos + 3], "little")
            kind, size = (header >> 1) & 3, header >> 3
            length = 3 + (1 if kind == 1 else size)  # an RLE block holds one byte
            if not self._available(length):
                raise EOFError("the zstd stream ends inside a frame")
            out = self._obj.decompress(self._take(length))
            if header & 1:  # the last block
                if self._checksum:
                    self._state = "checksum"
                else:
                    self._end_frame()
            return out

    def _end_frame(self) -> None:
        assert self._obj is not None
        if not self._obj.eof:
            raise zstandard.ZstdError("a zstd frame does not end after its last block")
        self._obj = None
        self._state = "between"

    def _check_ratio(self) -> None:
        if self._spent + self._excess() > RATIO_ALLOWANCE:
            made = self.produced - self._base[0]
            taken = self.consumed - self._base[1]
            raise UnsafeArchiveError(
                f"{self.where}: {self._period}: more than {self.max_ratio} bytes decompressed "
                f"per compressed byte ({made} bytes from {taken}); refused as a "
                "decompression bomb. If the bundle is trusted (a layer of zeros compresses "
                "that well), give --max-zstd-ratio with a higher limit")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _READ_SIZE
        pieces: list[bytes | memoryview] = []
        wanted = n
        while wanted > 0:
            if not self._out:
                if self._ended:
                    break
                out = self._block()
                if out is None:
                    break
                self.produced += len(out)
                self._check_ratio()
                self._out = memoryview(out)
                continue
            piece, self._out = self._out[:wanted], self._out[wanted:]
            pieces.append(piece)
            wanted -= len(piece)
        return b"".join(pieces)
