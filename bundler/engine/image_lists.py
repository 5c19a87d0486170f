"""Lists of image references as users give them: arguments and images files.

Spec: distribution ``reference`` grammar (see :mod:`bundler.oci.reference`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import BundlerError, InvalidReferenceError
from ..oci.reference import Reference

__all__ = ["parse_references", "read_images_file", "unique_references"]


def read_images_file(path: str | os.PathLike[str], *,
                     numbered: bool = False) -> list[str] | list[tuple[str, str]]:
    """Read a list of references: one per line, blank lines and ``#`` comments ignored.

    Args:
        path: the images file (UTF-8, a byte-order mark allowed), or ``-`` for stdin.
        numbered: return ``(reference, "FILE:LINE")`` pairs, so that a bad line can be
            named by :func:`parse_references`.

    Raises:
        BundlerError: the file cannot be read.
    """
    try:
        if str(path) == "-":
            text = sys.stdin.buffer.read().decode("utf-8-sig")
            path = "<stdin>"
        else:
            text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundlerError(f"cannot read images file {path}: {exc}") from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append((line, f"{path}:{number}"))
    if numbered:
        return out
    return [line for line, _ in out]


def parse_references(texts: Iterable[str | tuple[str, str]]) -> list[Reference]:
    """Parse and normalize references; duplicates (same canonical form) kept once.

    Args:
        texts: references, or ``(reference, where)`` pairs (``where`` like ``FILE:LINE``
            names the input in an error).

    Raises:
        InvalidReferenceError: naming the first bad input (and where it came from).
        BundlerError: no references at all.
    """
    refs: list[Reference] = []
    for item in texts:
        text, where = (item, "") if isinstance(item, str) else item
        try:
            refs.append(Reference.parse(text))
        except InvalidReferenceError as exc:
            if not where:
                raise
            raise InvalidReferenceError(exc.text, exc.reason, where=where) from exc
    if not refs:
        raise BundlerError("no image references given")
    return unique_references(refs)


def unique_references(references: Sequence[str | Reference]) -> list[Reference]:
    """Parse what is not parsed yet; keep each canonical reference once, in order.

    Raises:
        InvalidReferenceError: naming the first bad input.
    """
    refs = [r if isinstance(r, Reference) else Reference.parse(r) for r in references]
    return list({str(r): r for r in refs}.values())

