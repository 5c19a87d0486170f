"""Tag filters of an image set: include and exclude regexes, a semver range, latest N.

A :class:`TagFilter` is applied to the tags of one repository, in this order:

1. ``include``: a tag is kept when one of the regexes matches it whole (``re.fullmatch``),
   or anywhere in it (``re.search``) for a filter from skopeo's ``images-by-tag-regex``;
   no include regex keeps every tag.
2. ``exclude``: a tag that one of these regexes matches whole is left out.
3. ``semver``: only tags that parse as semantic versions (a leading ``v`` allowed) and
   satisfy the range are kept; tags that are not semver are left out. Ranges follow
   npm's grammar (``>=1.2.0 <2``, ``^1.2``, ``~1.2.3``, ``1.x``, ``||``), parsed by the
   ``node-semver`` library; as in npm, a pre-release satisfies a range only when one of
   its comparators names a pre-release of the same ``major.minor.patch``. Commas
   (skopeo's Masterminds syntax, ``>= 1.0, < 2``) are read as spaces.
4. ``latest``: the N highest tags: semver tags by precedence first, then the others in
   natural order (``v10`` after ``v9``), highest first. Registries give no push dates.

Pure: no I/O.

Spec: semver.org 2.0.0 (precedence); npm ``node-semver`` range grammar.
"""

from __future__ import annotations

import re
import shlex
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BundlerError

if TYPE_CHECKING:  # both are imported where first used: most runs filter no tags
    import nodesemver

__all__ = ["MATCH_TIMEOUT_S", "FilterError", "Regex", "TagFilter", "compile_regex", "highest",
           "natural_key", "parse_range", "parse_semver", "precedence"]


class FilterError(BundlerError, ValueError):
    """A regex, semver range or count of a filter that cannot be used.

    Attributes:
        what: the input, as ``--include-tags '(('`` or ``FILE:LINE``.
    """

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what


#: The longest one regex may take to match one tag or name, in seconds.
MATCH_TIMEOUT_S = 1.0


class Regex:
    """A user's regex (Python ``re`` syntax), matched with a time bound.

    Python's ``re`` backtracks without end on some patterns (``(a|a)+`` against a tag of
    40 ``a`` and a ``-``) and does not even let Ctrl-C through meanwhile. The ``regex``
    module runs the same syntax, answers many such patterns at once, lets Ctrl-C through
    and stops a match after :data:`MATCH_TIMEOUT_S`: a :class:`FilterError` naming the
    regex and the text.
    """

    def __init__(self, pattern: str, what: str) -> None:
        import regex

        self.pattern, self.what = pattern, what
        try:
            self._compiled: Any = regex.compile(pattern)
        except regex.error:  # re's syntax that regex reads otherwise: re, unbounded
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._compiled = re.compile(pattern)
        self._bounded = isinstance(self._compiled, regex.Pattern)

    def fullmatch(self, text: str) -> bool:
        """The regex matches the whole of ``text``."""
        return self._match(self._compiled.fullmatch, text)

    def search(self, text: str) -> bool:
        """The regex matches somewhere in ``text``."""
        return self._match(self._compiled.search, text)

    def _match(self, method: Callable[..., Any], text: str) -> bool:
        if not self._bounded:
            return method(text) is not None
        try:
            return method(text, timeout=MATCH_TIMEOUT_S) is not None
        except TimeoutError:
            raise FilterError(self.what, f"regex {self.pattern!r} takes more than "
                              f"{MATCH_TIMEOUT_S:g} s to match {text!r}: it backtracks "
                              "without end (nested repetition such as '(a|a)+'); simplify "
                              "it") from None


def compile_regex(pattern: str, what: str) -> Regex:
    """Compile a user's regex (Python ``re`` syntax; see :class:`Regex`).

    Raises:
        FilterError: it does not compile (names ``what`` and the reason).
    """
    if not isinstance(pattern, str):
        raise FilterError(what, f"{pattern!r} is not a regex string")
    try:
        with warnings.catch_warnings():  # re's FutureWarning on '[[:digit:]]' (a POSIX
            warnings.simplefilter("ignore")  # class, as in Go, for regex) is no output
            re.compile(pattern)
    except re.error as exc:
        raise FilterError(what, f"invalid regex {pattern!r}: {exc}") from exc
    return Regex(pattern, what)


def parse_range(text: str, what: str) -> nodesemver.Range:
    """Parse a semver range (npm grammar; commas read as spaces).

    Raises:
        FilterError: it does not parse, or it is empty.
    """
    if not isinstance(text, str) or not text.strip():
        raise FilterError(what, f"{text!r} is not a semver range like '>=1.2.0 <2'")
    import nodesemver

    try:
        return nodesemver.make_range(text.replace(",", " "), False)
    except (ValueError, TypeError) as exc:
        raise FilterError(what, f"invalid semver range {text!r}: {exc}") from exc


def parse_semver(tag: str) -> nodesemver.SemVer | None:
    """The semantic version a tag spells (``1.2.3``, ``v1.2.3-rc.1+b5``), or None."""
    if len(tag) > 128:
        return None
    import nodesemver

    try:
        return nodesemver.make_semver(tag, False)
    except (ValueError, TypeError):
        return None


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: ``v9 < v10``, ``a2b < a10b``."""
    return tuple((0, int(part), part) if part.isascii() and part.isdigit() else (1, 0, part)
                 for part in re.split(r"([0-9]+)", text) if part)


@dataclass(frozen=True)
class TagFilter:
    """What to keep of a repository's tags (see the module docstring for the order).

    Attributes:
        include: regexes, a tag matching one is kept (none: every tag).
        exclude: regexes, a tag matching one whole is left out.
        semver: an npm-style range, or None.
        latest: keep the N highest, or None.
        search: ``include`` matches anywhere in a tag (skopeo's ``images-by-tag-regex``)
            instead of the whole tag.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    semver: str | None = None
    latest: int | None = None
    search: bool = False
    _include: tuple[Regex, ...] = field(default=(), repr=False, compare=False)
    _exclude: tuple[Regex, ...] = field(default=(), repr=False, compare=False)
    _range: object = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, *, include: tuple[str, ...] | list[str] = (),
              exclude: tuple[str, ...] | list[str] = (), semver: str | None = None,
              latest: int | None = None, search: bool = False,
              where: str = "") -> TagFilter:
        """Check and compile a filter.

        Args:
            include, exclude: regexes. semver: a range. latest: N >= 1.
            search: ``include`` matches anywhere (skopeo's ``images-by-tag-regex``).
            where: the origin named in errors (``FILE:LINE``); "" for options, whose
                names are used (``--include-tags``).

        Raises:
            FilterError: a regex that does not compile, a range that does not parse, a
            ``latest`` below 1.
        """
        def name(option: str) -> str:
            return where or option

        inc = tuple(compile_regex(p, name("--include-tags")) for p in include)
        exc = tuple(compile_regex(p, name("--exclude-tags")) for p in exclude)
        rng = parse_range(semver, name("--semver")) if semver is not None else None
        if latest is not None and (isinstance(latest, bool) or not isinstance(latest, int)
                                   or latest < 1):
            raise FilterError(name("--latest"), f"{latest!r} is not a count of 1 or more")
        return cls(tuple(include), tuple(exclude), semver, latest, search, inc, exc, rng)

    def describe(self) -> str:
        """The filter in the command line's words, e.g. ``--semver '>=1 <2' --latest 5``."""
        option = "images-by-tag-regex" if self.search else "--include-tags"
        parts = [f"{option} {shlex.quote(p)}" for p in self.include]
        parts += [f"--exclude-tags {shlex.quote(p)}" for p in self.exclude]
        if self.semver is not None:
            parts.append(f"--semver {shlex.quote(self.semver)}")
        if self.latest is not None:
            parts.append(f"--latest {self.latest}")
        return " ".join(parts) or "all tags"

    def apply(self, tags: list[str]) -> list[str]:
        """The tags this filter keeps, each once: sorted (lexical, as the spec's tags
        list; registries do not all sort), or highest first with ``latest``.

        Args:
            tags: a repository's tags as listed.
        """
        kept = sorted(set(tags))
        if self._include:
            match = (lambda r, t: r.search(t)) if self.search else (lambda r, t: r.fullmatch(t))
            kept = [t for t in kept if any(match(r, t) for r in self._include)]
        if self._exclude:
            kept = [t for t in kept if not any(r.fullmatch(t) for r in self._exclude)]
        versions: dict[str, nodesemver.SemVer | None] = {}
        if self._range is not None or self.latest is not None:
            versions = {t: parse_semver(t) for t in kept}  # each tag parsed once
        if self._range is not None:
            rng = self._range
            kept = [t for t in kept if (v := versions[t]) is not None
                    and rng.test(v)]  # type: ignore[attr-defined]
        if self.latest is not None:
            kept = highest(kept, versions)[: self.latest]
        return kept


def precedence(version: nodesemver.SemVer) -> tuple:
    """A sort key in semver precedence (semver.org 2.0.0 section 11): major, minor,
    patch, then a release above its pre-releases, whose dot-separated identifiers
    compare numerically (digits) below alphanumerically (others), a longer list above
    its prefix."""
    pre = tuple((0, int(i), "") if isinstance(i, int) or re.fullmatch(r"[0-9]+", str(i))
                else (1, 0, str(i)) for i in version.prerelease)
    return (version.major, version.minor, version.patch, 0 if pre else 1, pre)


def highest(tags: list[str],
            versions: Mapping[str, nodesemver.SemVer | None] | None = None) -> list[str]:
    """``tags`` highest first: semver tags by precedence (then by text, for ``v1.2.3``
    and ``1.2.3``), then the others in descending natural order.

    Args:
        tags: the tags. versions: their parsed versions, if already known.
    """
    known = versions or {}
    parsed = {t: known[t] if t in known else parse_semver(t) for t in tags}
    semver = [t for t in tags if parsed[t] is not None]
    others = [t for t in tags if parsed[t] is None]
    semver.sort(key=lambda t: (precedence(parsed[t]), natural_key(t)),  # type: ignore[arg-type]
                reverse=True)
    others.sort(key=natural_key, reverse=True)
    return semver + others
