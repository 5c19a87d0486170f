"""Split volumes: one archive byte stream cut into ``NAME.000``, ``NAME.001``, ...

A split bundle is the byte stream of ``NAME`` (a ``.tar`` or ``.tar.zst``) cut at every
``split_size`` bytes; ``cat NAME.*`` gives the stream back. Beside the volumes,
``NAME.sha256`` lists each volume's sha256 in ``sha256sum`` format, followed by a
comment with its size in bytes::

    5d1e...c0  bundle.tar.zst.000
    ...
    # bundle.tar.zst.000 4294967296

so ``sha256sum -c bundle.tar.zst.sha256`` checks the volumes on any machine.

Volume numbers have one width for the whole set, so that a shell glob sorts them in
order: three digits (``.000`` to ``.999``) unless the writer is told to expect more
volumes than that (``.0000``, ...). A writer never starts a volume whose number does not
fit its width. Readers take any width, as long as it is the same for every volume.

Volumes are written under temp names and renamed only when the whole stream is
written; the checksum file comes last.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BundleError

__all__ = ["MIN_WIDTH", "VolumeInfo", "VolumeReader", "VolumeWriter", "find_volumes",
           "is_volume_of", "read_checksums", "volume_name", "volume_width"]

#: Digits of a volume number, at least (``NAME.000``).
MIN_WIDTH = 3
_VOLUME_RE = re.compile(r"^(?P<base>.+)\.(?P<number>\d{3,})$")
_LINE_RE = re.compile(r"^(?P<hex>[0-9a-f]{64}) [ *](?P<name>.+)$")
_SIZE_RE = re.compile(r"^# (?P<name>\S+) (?P<size>\d+)$")


def volume_name(base: Path, number: int, width: int = MIN_WIDTH) -> Path:
    """``base.000``, ``base.001``, ...: ``number`` with ``width`` digits (zero-padded)."""
    return base.with_name(f"{base.name}.{number:0{width}d}")


def volume_width(size: int, split_size: int) -> int:
    """Digits that number every volume of a ``size``-byte stream cut every ``split_size``.

    At least :data:`MIN_WIDTH`; names of one width sort in numeric order in a shell glob.
    """
    count = max(1, -(-size // split_size))
    return max(MIN_WIDTH, len(str(count - 1)))


def is_volume_of(path: Path, base: Path) -> bool:
    """True if ``path`` is named like a volume of ``base`` (``base.NNN``)."""
    match = _VOLUME_RE.match(path.name)
    return match is not None and match.group("base") == base.name


@dataclass(frozen=True)
class VolumeInfo:
    """One volume as the checksum file lists it: ``name``, ``sha256`` hex, ``size`` bytes."""

    name: str
    sha256: str
    size: int | None


def checksum_path(base: Path) -> Path:
    """``NAME.sha256`` beside the volumes."""
    return base.with_name(base.name + ".sha256")


def find_volumes(path: str | os.PathLike[str]) -> tuple[Path, list[Path]] | None:
    """Find the volumes of a split bundle given its base name or any of its volumes.

    Every ``NAME.<digits>`` file beside ``NAME`` counts, gaps in the numbering included
    (:class:`VolumeReader` reports the missing numbers). The width of the numbers is the
    set's own (``NAME.000`` or ``NAME.0000``, ...); names of two widths are refused.

    Args:
        path: ``NAME`` (when ``NAME`` itself does not exist) or ``NAME.<number>``.

    Returns:
        (base path, volume paths in numeric order), or None if ``path`` is not a split
        bundle.

    Raises:
        BundleError: volumes numbered with two widths lie beside each other.
    """
    path = Path(path)
    match = _VOLUME_RE.match(path.name)
    if match and path.is_file():
        base = path.with_name(match.group("base"))
    elif not path.exists():
        base = path
    else:
        return None
    try:
        names = [p for p in base.parent.iterdir() if is_volume_of(p, base) and p.is_file()]
    except OSError:
        return None
    if not names:
        return None
    numbers = {p: _VOLUME_RE.match(p.name).group("number") for p in names}  # type: ignore[union-attr]
    width = min(len(n) for n in numbers.values())
    strays = sorted(p.name for p, n in numbers.items() if len(n) > width and n.startswith("0"))
    if strays:
        raise BundleError(f"{base}: volumes numbered with {width} digits and {strays[0]} lie "
                          "side by side; keep the volumes of one bundle only")
    return base, sorted(names, key=lambda p: int(numbers[p]))


def _number(path: Path) -> int:
    match = _VOLUME_RE.match(path.name)
    if match is None:
        raise BundleError(f"{path}: not a volume name (NAME.000, NAME.001, ...)")
    return int(match.group("number"))


def read_checksums(base: Path) -> list[VolumeInfo] | None:
    """Parse ``NAME.sha256``; None if there is no such file.

    Raises:
        BundleError: a line that is neither a checksum line nor a size comment.
    """
    path = checksum_path(base)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the volume checksums: {exc}") from exc
    sums: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if (size := _SIZE_RE.match(line)) is not None:
            sizes[size.group("name")] = int(size.group("size"))
        elif (entry := _LINE_RE.match(line)) is not None:
            sums[entry.group("name")] = entry.group("hex")
        elif not line.startswith("#"):
            raise BundleError(f"{path}:{number}: not a sha256sum line: {line!r}")
    return [VolumeInfo(name, hexdigest, sizes.get(name)) for name, hexdigest in sums.items()]


class VolumeWriter:
    """A write-only binary stream that lands in volumes of ``split_size`` bytes.

    Args:
        base: the bundle name ``NAME``; volumes are ``NAME.000``, ... .
        split_size: bytes per volume (the last one may be shorter).
        expected_size: bytes the stream will have at most, if known: the volume numbers
            get enough digits for all of them (see :meth:`expect`).

    Call :meth:`commit` after the last write (renames the volumes and writes the
    checksum file) or :meth:`abort` (removes everything written).

    Raises:
        BundleError: a split size below 1 byte; (from :meth:`write`) a volume whose
            number would not fit the width, which would sort out of order.
    """

    def __init__(self, base: Path, split_size: int, expected_size: int | None = None) -> None:
        if split_size < 1:
            raise BundleError(f"split size must be at least 1 byte, got {split_size}")
        self.base = base
        self.split_size = split_size
        self.width = MIN_WIDTH
        self.volumes: list[tuple[Path, Path, str, int]] = []  # temp, final, sha256, size
        self._file: BinaryIO | None = None
        self._hasher = hashlib.sha256()
        self._left = 0
        self._renamed: list[Path] = []  # renamed by a commit not finished yet
        if expected_size is not None:
            self.expect(expected_size)

    def expect(self, size: int) -> None:
        """Number the volumes for a stream of at most ``size`` bytes (before any write).

        Raises:
            BundleError: a volume was written already.
        """
        if self.volumes:
            raise BundleError(f"{self.base}: the volume numbering is fixed once a volume "
                              "is written")
        self.width = volume_width(size, self.split_size)

    def _open_next(self) -> None:
        self._close_current()
        number = len(self.volumes)
        if number >= 10 ** self.width:
            raise BundleError(
                f"{self.base}: more than {10 ** self.width} volumes of {self.split_size} "
                f"bytes; {volume_name(self.base, number, self.width).name} would sort before "
                f"{volume_name(self.base, number - 1, self.width).name} in a shell glob. "
                "Choose a larger split size")
        final = volume_name(self.base, number, self.width)
        temp = final.with_name(f".{final.name}.partial")
        self._file = open(temp, "wb")  # noqa: SIM115 - closed in _close_current
        self._hasher = hashlib.sha256()
        self._left = self.split_size
        self.volumes.append((temp, final, "", 0))

    def _close_current(self) -> None:
        if self._file is None:
            return
        f = self._file
        f.flush()
        os.fsync(f.fileno())
        f.close()
        temp, final, _, _ = self.volumes[-1]
        self.volumes[-1] = (temp, final, self._hasher.hexdigest(), self.split_size - self._left)
        self._file = None

    def write(self, data: bytes) -> int:
        """Append bytes, starting a new volume whenever the current one is full."""
        view = memoryview(data)
        while view:
            if self._file is None or self._left == 0:
                self._open_next()
            assert self._file is not None
            piece = view[: self._left]
            self._file.write(piece)
            self._hasher.update(piece)
            self._left -= len(piece)
            view = view[len(piece):]
        return len(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def commit(self) -> list[Path]:
        """Close, rename the volumes to their names, write ``NAME.sha256``; the paths.

        Raises:
            OSError: a disk error; the volumes renamed so far are then removed again by
            :meth:`abort`, so that no set of volumes without its checksum file is left.
        """
        if self._file is None and not self.volumes:
            self._open_next()
        self._close_current()
        for temp, final, _, _ in self.volumes:
            os.replace(temp, final)
            self._renamed.append(final)
        lines = [f"{digest}  {final.name}" for _, final, digest, _ in self.volumes]
        lines += [f"# {final.name} {size}" for _, final, _, size in self.volumes]
        from .layout import write_atomic

        path = checksum_path(self.base)
        write_atomic(path, ("\n".join(lines) + "\n").encode())  # mode 0666 less the umask
        self._renamed = []
        return [final for _, final, _, _ in self.volumes]

    def abort(self) -> None:
        """Remove every volume written so far (a close that fails, as on a full disk,
        does not keep a file)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # its buffered bytes are dropped with it
            self._file = None
        for temp, _, _, _ in self.volumes:
            temp.unlink(missing_ok=True)
        for final in self._renamed:  # a commit that failed after renaming some
            final.unlink(missing_ok=True)
        self._renamed = []


class VolumeReader:
    """Read volumes one after another as one binary stream, checking each one's sha256.

    Missing volumes, and volumes whose size differs from the checksum file, are found
    before the first byte is read: missing ones are those the checksum file
    lists and those a gap in the numbering shows (``NAME.002``, ``NAME.004``: ``NAME.003``
    is missing). The stream ends at the first gap; :meth:`drain` still reads the volumes
    after it, so that each one is checked.

    Args:
        volumes: the volume paths in numeric order (see :func:`find_volumes`).
        checksums: the checksum file's entries, or None to skip the checks.
        on_problem: called with a message for each problem (verify); when None, the
            first problem is raised as :class:`BundleError` (import).

    Raises:
        BundleError: (when ``on_problem`` is None) a volume is missing.
    """

    def __init__(self, volumes: list[Path], checksums: list[VolumeInfo] | None,
                 on_problem: Callable[[str], None] | None = None) -> None:
        self.volumes = list(volumes)
        self.expected = {v.name: v for v in checksums} if checksums is not None else None
        self.on_problem = on_problem
        self._index = -1
        self._file: BinaryIO | None = None
        self._hasher = hashlib.sha256()
        self._size = 0
        self._draining = False
        numbers = [_number(p) for p in self.volumes]
        #: index of the first volume after a gap: the stream ends before it
        self._end = next((i for i, n in enumerate(numbers) if n != i), len(self.volumes))
        self._sized: set[str] = set()
        self._missing()
        self._sizes()

    def _sizes(self) -> None:
        """Compare each volume's size with the checksum file before reading any."""
        for path in self.volumes:
            info = (self.expected or {}).get(path.name)
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if info is not None and info.size is not None and info.size != size:
                self._sized.add(path.name)
                self._problem(f"volume {path.name} has {size} bytes, the checksum file "
                              f"says {info.size} (truncated or from another bundle)")

    def _missing(self) -> None:
        if not self.volumes:
            return
        first = self.volumes[0]
        base = first.with_name(first.name.rsplit(".", 1)[0])
        width = min(len(p.name.rsplit(".", 1)[1]) for p in self.volumes)
        present = {_number(p) for p in self.volumes}
        listed = {_number(Path(name)) for name in self.expected or ()
                  if is_volume_of(Path(name), base)}
        messages = []
        for number in sorted(set(range(max(present))) - present | listed - present):
            name = volume_name(base, number, width).name
            if number in listed:
                messages.append(f"volume {name} is missing (listed in the checksum file)")
            else:
                messages.append(f"volume {name} is missing (the numbering skips it)")
        if messages and self.on_problem is None:
            raise BundleError("; ".join(messages))
        for message in messages:
            self._problem(message)

    def _problem(self, message: str) -> None:
        if self.on_problem is None:
            raise BundleError(message)
        self.on_problem(message)

    def _finish_current(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        path = self.volumes[self._index]
        if self.expected is None:
            return
        info = self.expected.get(path.name)
        if info is None:
            base = path.with_name(path.name.rsplit(".", 1)[0])
            self._problem(f"volume {path.name} is not listed in {checksum_path(base).name}")
        elif info.size is not None and info.size != self._size:
            if path.name in self._sized:
                return  # said before reading
            self._problem(f"volume {path.name} has {self._size} bytes, the checksum file "
                          f"says {info.size} (truncated or from another bundle)")
        elif info.sha256 != self._hasher.hexdigest():
            self._problem(f"volume {path.name}: sha256 {self._hasher.hexdigest()} does not "
                          f"match the checksum file ({info.sha256}); it is damaged or "
                          "belongs to another bundle")

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the concatenated volumes (``b""`` at the end or a gap)."""
        while True:
            if self._file is None:
                last = len(self.volumes) if self._draining else self._end
                if self._index + 1 >= last:
                    return b""
                self._index += 1
                try:
                    self._file = open(self.volumes[self._index], "rb")  # noqa: SIM115
                except OSError as exc:
                    raise BundleError(f"cannot read volume {self.volumes[self._index]}: "
                                      f"{exc}") from exc
                self._hasher, self._size = hashlib.sha256(), 0
            data = self._file.read(n if n is not None and n >= 0 else 1 << 20)
            if data:
                self._hasher.update(data)
                self._size += len(data)
                return data
            self._finish_current()

    def drain(self, chunk_size: int = 1 << 20) -> None:
        """Read the rest of every volume, past a gap too, so that each one is checked."""
        self._draining = True
        while self.read(chunk_size):
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
