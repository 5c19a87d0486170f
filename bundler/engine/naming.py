"""Where each image of a bundle goes on import: ``--to`` prefixes and ``--mapping`` lines.

``--to REGISTRY[/PREFIX]``: the destination repository is PREFIX joined with the source
repository path (without its registry host); the tag is kept; an image recorded by
digest only is pushed by digest. A layout entry named by a bare tag (skopeo
``oci:DIR:tag``, umoci) has no repository: ``--to`` must then name the full repository.

``--mapping FILE``: ``SOURCE=DESTINATION`` lines in the style of ``oc image mirror``;
SOURCE is the name the bundle records (or the image's digest, which names every entry
of that image), DESTINATION a full reference (no tag: the source tag is kept). Blank
lines and ``#`` comments are ignored; a repeated line counts once.

Destinations always name their registry host: the first component holds a ``.`` or a
``:`` or is ``localhost`` (``docker.io/...`` for Docker Hub). A name without one is
refused rather than sent to Docker Hub. Two images may not go to the same tagged
destination (the tag would name whichever was pushed last).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidReferenceError, MappingError
from ..oci.content import Descriptor, entry_name
from ..oci.digest import Digest
from ..oci.reference import Reference

__all__ = ["Target", "check_to", "parse_mapping", "resolve_targets", "split_to"]



@dataclass(frozen=True, eq=False)
class Target:
    """One image to import.

    Attributes:
        name: the image's name in the bundle (or its digest when unnamed).
        descriptor: its ``index.json`` descriptor.
        destination: where it goes; ``tag`` None means push by digest only.
    """

    name: str
    descriptor: Descriptor
    destination: Reference


def _source_reference(name: str) -> Reference | None:
    """A full reference if the recorded name is one; None for a bare tag."""
    if not name or not any(c in name for c in "/:@"):
        return None
    return Reference.parse(name, default_tag=None)


def _is_host(component: str) -> bool:
    """Whether a name's first component names a registry (docker's rule, made strict)."""
    return any(c in component for c in ".:[") or component == "localhost"


def _split_to(to: str) -> tuple[str, str]:
    shown = to
    if "://" in to:
        raise MappingError(f"--to {shown!r}: expected REGISTRY[/PREFIX] without a scheme, "
                           f"e.g. {to.split('://', 1)[1].rstrip('/') or 'registry.internal:5000'}")
    to = to.rstrip("/")
    registry, _, prefix = to.partition("/")
    if not registry:
        raise MappingError(f"--to {shown!r}: expected REGISTRY[/PREFIX]")
    if not _is_host(registry):
        # a first component without '.', ':' or localhost would parse as a Docker Hub path
        raise MappingError(
            f"--to {shown!r}: {registry!r} is not a registry host; expected REGISTRY[/PREFIX] "
            f"with REGISTRY like registry.internal:5000 or localhost"
        )
    if any(c in prefix for c in ":@"):
        raise MappingError(f"--to {shown!r}: expected REGISTRY[/PREFIX] without a tag or "
                           "digest (each image keeps its own tag)")
    try:
        Reference.parse(f"{to}/x" if prefix else f"{registry}/x", default_tag=None)
    except InvalidReferenceError as exc:
        raise MappingError(f"--to {shown!r}: {exc.reason}") from exc
    return registry, prefix


def check_to(to: str) -> None:
    """Check a ``--to REGISTRY[/PREFIX]`` without any I/O.

    Raises:
        MappingError: a scheme, no registry host, a bad repository prefix, a tag or digest.
    """
    _split_to(to)


def split_to(to: str) -> tuple[str, str]:
    """A ``--to REGISTRY[/PREFIX]`` as (registry, prefix); the prefix is "" when none.

    Raises:
        MappingError: as :func:`check_to`.
    """
    return _split_to(to)


def _to_reference(text: str, *, what: str) -> Reference:
    try:
        return Reference.parse(text, default_tag=None)
    except InvalidReferenceError as exc:
        raise MappingError(f"{what}: {exc}") from exc


def _destination(text: str, *, what: str) -> Reference:
    """A mapping destination: a full reference that names its registry host."""
    first, slash, _ = text.partition("/")
    if not slash or not _is_host(first):
        raise MappingError(
            f"{what}: {text!r} names no registry host; write the registry first, e.g. "
            f"registry.internal:5000/{text} (docker.io/{text} for Docker Hub)"
        )
    return _to_reference(text, what=what)


def parse_mapping(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read ``SOURCE=DESTINATION`` lines.

    Raises:
        MappingError: unreadable file, a line without ``=``, or a destination that is no
        reference with a registry host (naming ``FILE:LINE``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark allowed
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc}") from exc
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        source, eq, destination = line.partition("=")
        if not eq or not source.strip() or not destination.strip():
            raise MappingError(f"{path}:{number}: expected SOURCE=DESTINATION, got {line!r}")
        _destination(destination.strip(),
                     what=f"{path}:{number}: mapping destination {destination.strip()!r}")
        pairs.append((source.strip(), destination.strip()))
    if not pairs:
        raise MappingError(f"{path}: no SOURCE=DESTINATION lines: nothing to import")
    return pairs


def _keys(descriptor: Descriptor, name: str) -> set[str]:
    keys = {str(descriptor.digest)}
    if name:
        keys.add(name)
        ref = None
        try:
            ref = _source_reference(name)
        except InvalidReferenceError:
            pass
        if ref is not None:
            keys.add(str(ref))
    return keys


def resolve_targets(
    entries: list[Descriptor],
    *,
    to: str | None = None,
    mapping: list[tuple[str, str]] | None = None,
) -> list[Target]:
    """Work out the destination of each bundle entry.

    Args:
        entries: the ``index.json`` descriptors.
        to: ``REGISTRY[/PREFIX]``, or None.
        mapping: (source, destination) pairs; limits the import to those images.

    Raises:
        MappingError: neither or both of ``to``/``mapping``; a mapping source not in the
        bundle; an entry without a repository and a ``--to`` that names none.
    """
    if (to is None) == (mapping is None):
        raise MappingError("give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE")
    targets: list[Target] = []
    if mapping is not None:
        sources: list[str] = []
        for source, destination in dict.fromkeys(mapping):  # a repeated line counts once
            wanted = {source, _normalized(source)}
            matches = [d for d in entries if wanted & _keys(d, entry_name(d))]
            latest = _with_latest(source)
            if not matches and latest is not None:  # no tag means :latest, as in export
                matches = [d for d in entries if latest in _keys(d, entry_name(d))]
            if not matches:
                raise MappingError(f"mapping source {source!r} is not in the bundle")
            # a digest names every entry of that image (web:1.0 and web:latest); a name
            # names one
            for entry in matches if _is_digest(source) else matches[:1]:
                targets.append(_mapped(entry, source, destination))
                sources.append(source)
        return _unique(targets, mapped=sources)
    registry, prefix = _split_to(to or "")

    for position, entry in enumerate(entries):
        name = entry_name(entry)
        src = _source_reference(name)
        if src is not None:
            repository = f"{prefix}/{src.repository}" if prefix else src.repository
            dest = _to_reference(f"{registry}/{repository}", what=f"--to {to!r}")
            dest = dest.with_tag(src.tag)
        elif prefix:
            dest = _to_reference(f"{registry}/{prefix}", what=f"--to {to!r}")
            try:
                dest = dest.with_tag(name or None)
            except InvalidReferenceError as exc:
                raise MappingError(
                    f"bundle entry {name!r} is neither a reference nor a valid tag "
                    f"({exc.reason}); use --mapping to say where it goes") from None
        else:
            label = f"{name!r}" if name else f"#{position} ({entry.digest.short}, no name)"
            raise MappingError(
                f"bundle entry {label} records no repository; give --to with the full "
                f"repository (REGISTRY/REPOSITORY) or use --mapping"
            )
        targets.append(Target(name or str(entry.digest), entry, _pin(dest, entry)))
    return _unique(targets)


def _is_digest(text: str) -> bool:
    """Whether a mapping source is a bare digest (``sha256:...``)."""
    try:
        Digest.parse(text)
    except InvalidReferenceError:
        return False
    return True


def _mapped(entry: Descriptor, source: str, destination: str) -> Target:
    """The target of one bundle entry named by a mapping line."""
    recorded = entry_name(entry)
    dest = _destination(destination, what=f"mapping destination {destination!r}")
    if dest.digest is not None and dest.digest != entry.digest:
        raise MappingError(
            f"mapping destination {destination!r} names digest {dest.digest}, but "
            f"{source!r} is {entry.digest}; a push keeps the digest, so "
            "drop the digest or give the image's own")
    dest = dest.with_digest(None)
    if dest.tag is None:
        # the recorded tag is kept; an entry without a name goes by digest only
        src = _safe_source(recorded)
        tag = src.tag if src is not None else (
            recorded if recorded and "@" not in recorded else None)
        try:
            dest = dest.with_tag(tag)
        except InvalidReferenceError as exc:
            raise MappingError(
                f"bundle entry {recorded!r} is not a valid tag ({exc.reason}); give "
                f"the mapping destination of {source!r} a tag") from None
    return Target(recorded or str(entry.digest), entry, _pin(dest, entry))


def _unique(targets: list[Target], mapped: list[str] | None = None) -> list[Target]:
    """Refuse two images (or mapping lines) that go to one tagged destination; the same
    image twice to one destination is pushed once.

    Args:
        targets: in the order of the bundle entries or mapping lines.
        mapped: the mapping sources, one per target (None: ``--to``).

    Returns:
        ``targets`` less such repeats.

    Raises:
        MappingError: naming both sources and the destination.
    """
    seen: dict[str, int] = {}
    by_digest: set[str] = set()
    kept: list[Target] = []
    for position, target in enumerate(targets):
        dest = target.destination
        if dest.tag is None:
            if str(dest) not in by_digest:  # pushed by digest: distinct content, names
                by_digest.add(str(dest))
                kept.append(target)
            continue
        key = str(dest.with_digest(None))
        if key in seen and targets[seen[key]].descriptor.digest == target.descriptor.digest:
            continue  # the same image again (a digest naming web:1.0 and web:latest)
        if key in seen:
            first = seen[key]
            if mapped is not None:
                raise MappingError(
                    f"mapping sources {mapped[first]!r} and {mapped[position]!r} both go to "
                    f"{key}; give each image its own destination"
                )
            raise MappingError(
                f"images {targets[first].name!r} and {target.name!r} both go to "
                f"{key}; use --mapping to give each its own destination"
            )
        seen[key] = position
        kept.append(target)
    return kept


def _pin(dest: Reference, entry: Descriptor) -> Reference:
    """Destination references carry the entry's digest (push by digest if no tag)."""
    return dest.with_digest(entry.digest)


def _normalized(text: str) -> str:
    src = _safe_source(text)
    return str(src) if src is not None else text


def _with_latest(text: str) -> str | None:
    """``text`` as a full reference with the default tag ``latest`` (``alpine`` ->
    ``docker.io/library/alpine:latest``), or None when it is none."""
    try:
        return str(Reference.parse(text))
    except InvalidReferenceError:
        return None


def _safe_source(text: str) -> Reference | None:
    try:
        return _source_reference(text)
    except InvalidReferenceError:
        return None
