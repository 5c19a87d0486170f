"""Text from outside made safe for a terminal: the one escaping function.

Image names and annotations from a bundle, registry error bodies, file names: any of
them can hold control characters. Printed raw, ``ESC]0;...BEL`` retitles the terminal,
``ESC[2J`` clears it, and CR or LF start a forged line (a fake ``OK``). Every string
that came from outside passes through :func:`escape` before it reaches stdout or stderr
(JSON output needs nothing more: ``json.dumps`` escapes control characters itself).
"""

from __future__ import annotations

__all__ = ["escape"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: object) -> str:
    """``text`` (``str()`` of it) with every non-printable character as a visible escape.

    Control characters (C0, DEL, C1, so every escape sequence's ESC, and CR, LF, TAB),
    the Unicode format and separator characters (bidirectional overrides, zero-width
    characters, U+2028) and lone surrogates become ``\\x1b``, ``\\r``, ``\\n``,
    ``\\u202e``, ...; printable text, any script, and the space stay as they are.

    Args:
        text: a string, or any object (an exception) whose ``str()`` is printed.

    Returns:
        The text, safe to write to a terminal on one line.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _visible(char) for char in text)
