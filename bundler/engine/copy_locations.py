"""The two locations of ``bundler copy``, checked before anything moves: transports,
a destination equal to the source, and the one image a layout or archive location
names.

Spec: containers-transports(5) (skopeo's locations); image-spec ``annotations.md``
(``org.opencontainers.image.ref.name``), ``image-layout.md``.
"""

from __future__ import annotations

import os

from ..errors import InvalidReferenceError, LocationError
from ..oci.content import CONTAINERD_NAME, REF_NAME, Descriptor, entry_name
from ..oci.reference import Location, Reference, parse_location
from .referrers import subject_of

__all__ = ["check_locations", "select_entry"]


def check_locations(source: str, destination: str) -> tuple[Location, Location]:
    """Parse the two locations of a copy and refuse what cannot work, without I/O
    beyond resolving paths.

    Raises:
        LocationError: no or an unknown transport, an ``oci-archive:`` or
            ``docker-archive:`` source on stdin (``-``), a ``docker://`` destination by
            digest only, a destination equal to the source.
        InvalidReferenceError: a bad reference.
    """
    src = parse_location(source, require_transport=True)
    dst = parse_location(destination, require_transport=True)
    if src.transport in ("oci-archive", "docker-archive") and src.path == "-":
        article = "an" if src.transport == "oci-archive" else "a"
        raise LocationError(source, f"{article} {src.transport}: source is read twice and cannot "
                                    "be stdin; save it to a file, or push it from the pipe "
                                    "with bundler import - --to REGISTRY[/PREFIX]")
    if dst.transport == "docker-archive" and dst.path == "-":
        raise LocationError(destination, "a docker-archive: destination is a file; name it")
    if dst.transport == "docker-archive" and dst.ref_name:
        _check_repo_tag(destination, dst.ref_name)
    if dst.transport == "docker" and dst.reference is not None and dst.reference.tag is None:
        raise LocationError(destination, "a docker:// destination needs a tag "
                                         "(REGISTRY/REPOSITORY:TAG); a push by digest "
                                         "alone is not supported")
    if _same(src, dst):
        raise LocationError(destination, f"the destination is the source ({source}); "
                                         "copy to another location")
    return src, dst


def _check_repo_tag(destination: str, name: str) -> None:
    """A docker-archive: destination's NAME becomes its ``RepoTags`` entry: it must be
    REPOSITORY:TAG (else docker load would load the image untagged, the name lost)."""
    try:
        ref = None if name.startswith("sha256:") else Reference.parse(name, default_tag=None)
    except InvalidReferenceError as exc:
        raise LocationError(destination, f"the name {name!r} is not a reference ({exc}); "
                                         "docker load takes REPOSITORY:TAG") from None
    if ref is None or ref.tag is None or ref.digest is not None:
        raise LocationError(destination, f"the name {name!r} is not REPOSITORY:TAG, the "
                                         "only name docker load takes (RepoTags)")


def _same(src: Location, dst: Location) -> bool:
    """Whether two locations name the same image (a layout: the same directory or file
    and the same name; an archive file is the same whatever the name)."""
    if src.transport == "docker" or dst.transport == "docker":
        return (src.transport == dst.transport
                and str(src.reference).split("@")[0] == str(dst.reference).split("@")[0])
    same_path = os.path.realpath(src.path) == os.path.realpath(dst.path)
    if dst.transport in ("oci-archive", "docker-archive") or src.transport != dst.transport:
        return same_path
    return same_path and src.ref_name == dst.ref_name


def _references(name: str) -> set[str]:
    """A recorded or asked-for name and its normalized form (a bare tag stays itself)."""
    out = {name}
    if any(c in name for c in "/:@"):
        try:
            out.add(str(Reference.parse(name, default_tag=None)))
        except ValueError:
            pass
    return out


def select_entry(location: Location, entries: list[Descriptor], text: str) -> Descriptor:
    """The ``index.json`` entry a layout or archive location names.

    ``:NAME`` matches an entry's ``org.opencontainers.image.ref.name`` or
    ``io.containerd.image.name``, as a full reference (``docker.io/library/alpine:3.20``
    also matches ``alpine:3.20``; no tag means ``latest``) or a bare tag, or the
    entry's digest. Without ``:NAME`` the layout must hold exactly one image (its
    referrers, see :mod:`bundler.engine.referrers`, aside).

    Raises:
        LocationError: no image, several and no name, or no image of that name (listing
        the names held and the accepted form).
    """
    held = [entry_name(e) or f"(unnamed) {e.digest}" for e in entries]
    listing = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
    form = f"{location.transport}:{location.path}:NAME"
    if not entries:
        raise LocationError(text, "holds no image (its index.json is empty)")
    name = location.ref_name
    if name is None:
        entries = [e for e in entries if subject_of(e) is None] or entries  # not referrers
        if len({e.digest for e in entries}) > 1:
            raise LocationError(text, f"holds {len(entries)} images ({listing}); name "
                                      f"one: {form}")
        return entries[0]

    def keys(entry: Descriptor) -> set[str]:
        out = {str(entry.digest)}
        for key in (REF_NAME, CONTAINERD_NAME):
            if entry.annotations.get(key):
                out |= _references(entry.annotations[key])
        return out

    matches = [e for e in entries if _references(name) & keys(e)]
    if not matches and "@" not in name:
        try:
            latest = str(Reference.parse(name))  # no tag means :latest, as in export
        except ValueError:
            latest = ""
        matches = [e for e in entries if latest in keys(e)]
    if not matches:
        raise LocationError(text, f"holds no image named {name!r}; it holds {listing} "
                                  f"(give one as {form})")
    if len({e.digest for e in matches}) > 1:
        raise LocationError(text, f"{name!r} names {len(matches)} different images; "
                                  "name one by its full reference")
    return matches[0]
