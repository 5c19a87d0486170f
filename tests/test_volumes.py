"""Split volumes: a numbering that sorts in a shell glob, gaps named, widths read back."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from bundler.errors import BundleError
from bundler.stores.volumes import (
    VolumeReader,
    VolumeWriter,
    find_volumes,
    read_checksums,
    volume_width,
)


def write_volumes(base: Path, data: bytes, split_size: int,
                  expected_size: int | None = None) -> list[Path]:
    writer = VolumeWriter(base, split_size, expected_size)
    writer.write(data)
    return writer.commit()


def read_back(base: Path) -> bytes:
    found = find_volumes(base)
    assert found is not None
    reader = VolumeReader(found[1], read_checksums(found[0]))
    out = b""
    while chunk := reader.read(1 << 16):
        out += chunk
    reader.close()
    return out


def test_volume_width() -> None:
    assert [volume_width(size, 1) for size in (0, 1, 1000, 1001, 10_000, 10_001)] == \
        [3, 3, 3, 4, 4, 5]
    assert volume_width(1000 * 4096, 4096) == 3
    assert volume_width(1000 * 4096 + 1, 4096) == 4


def test_a_normal_set_keeps_three_digits(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    paths = write_volumes(base, b"x" * 25, 10, expected_size=40)
    assert [p.name for p in paths] == ["b.tar.000", "b.tar.001", "b.tar.002"]


def test_more_than_1000_volumes_sort_in_a_shell_glob(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    data = bytes(i % 251 for i in range(1001))
    paths = write_volumes(base, data, 1, expected_size=len(data))
    assert len(paths) == 1001
    assert (paths[0].name, paths[999].name, paths[1000].name) == \
        ("b.tar.0000", "b.tar.0999", "b.tar.1000")
    assert sorted(tmp_path.glob("b.tar.[0-9]*")) == paths
    out = subprocess.run("cat b.tar.*", shell=True, cwd=tmp_path, capture_output=True,
                         check=True)
    assert out.stdout == data + (tmp_path / "b.tar.sha256").read_bytes()
    sums = read_checksums(base)
    assert sums is not None
    assert [v.name for v in sums] == [p.name for p in paths]
    assert find_volumes(base) == (base, paths)
    assert find_volumes(paths[517]) == (base, paths)
    assert read_back(base) == data


def test_a_volume_past_the_width_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    writer = VolumeWriter(base, 1)
    writer.write(b"y" * 1000)
    with pytest.raises(BundleError) as info:
        writer.write(b"z")
    assert str(info.value) == (f"{base}: more than 1000 volumes of 1 bytes; b.tar.1000 would "
                               "sort before b.tar.999 in a shell glob. Choose a larger split "
                               "size")
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_the_numbering_is_fixed_once_a_volume_is_written(tmp_path: Path) -> None:
    writer = VolumeWriter(tmp_path / "b.tar", 4)
    writer.write(b"abc")
    with pytest.raises(BundleError, match="the volume numbering is fixed"):
        writer.expect(1 << 20)
    writer.abort()


def test_readers_take_any_consistent_width(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    for number, data in enumerate([b"ab", b"cd", b"e"]):
        base.with_name(f"b.tar.{number:05d}").write_bytes(data)
    assert read_back(base) == b"abcde"
    assert find_volumes(tmp_path / "b.tar.00001") == \
        (base, [tmp_path / f"b.tar.{n:05d}" for n in range(3)])


def test_an_old_set_past_999_reads_in_numeric_order(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    for number in range(1002):
        base.with_name(f"b.tar.{number:03d}").write_bytes(bytes([number % 256]))
    assert read_back(base) == bytes(n % 256 for n in range(1002))


def test_volumes_of_two_widths_are_refused(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    for name in ("b.tar.000", "b.tar.001", "b.tar.0000"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(BundleError) as info:
        find_volumes(base)
    assert str(info.value) == (f"{base}: volumes numbered with 3 digits and b.tar.0000 lie "
                               "side by side; keep the volumes of one bundle only")


def test_a_gap_names_the_missing_volumes(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    paths = write_volumes(base, b"0123456789", 2)
    paths[1].unlink()
    paths[3].unlink()
    found = find_volumes(base)
    assert found == (base, [paths[0], paths[2], paths[4]])
    with pytest.raises(BundleError) as info:
        VolumeReader(found[1], read_checksums(base))
    assert str(info.value) == ("volume b.tar.001 is missing (listed in the checksum file); "
                               "volume b.tar.003 is missing (listed in the checksum file)")
    problems: list[str] = []
    reader = VolumeReader(found[1], None, problems.append)
    assert problems == ["volume b.tar.001 is missing (the numbering skips it)",
                        "volume b.tar.003 is missing (the numbering skips it)"]
    assert reader.read() == b"01"
    assert reader.read() == b""  # the stream ends at the gap


def test_volumes_after_a_gap_are_still_checked(tmp_path: Path) -> None:
    base = tmp_path / "b.tar"
    paths = write_volumes(base, b"0123456789", 2)
    paths[1].unlink()
    paths[3].write_bytes(b"??")
    problems: list[str] = []
    found = find_volumes(base)
    assert found is not None
    reader = VolumeReader(found[1], read_checksums(base), problems.append)
    reader.drain()
    sums = {v.name: v.sha256 for v in read_checksums(base) or []}
    theirs = hashlib.sha256(b"??").hexdigest()
    assert problems == [
        "volume b.tar.001 is missing (listed in the checksum file)",
        f"volume b.tar.003: sha256 {theirs} does not match the checksum file "
        f"({sums['b.tar.003']}); it is damaged or belongs to another bundle",
    ]
