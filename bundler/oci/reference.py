"""Image references and transport-prefixed locations. No I/O here.

Spec: distribution ``reference`` grammar (``reference/reference.go``, ``normalize.go``)::

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [domain "/"] path-component ["/" path-component]*
    domain    := host [":" port]            host: DNS name, IPv4, or "[" IPv6 "]"
    path-component := [a-z0-9]+ (separator [a-z0-9]+)*     separator: [._] | "__" | "-"+
    tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

Host names are case-insensitive (RFC 4343): the registry host is lower-cased
(``LOCALHOST:5000`` is ``localhost:5000``); path components must be lowercase, as the
grammar says; tags keep their case.

Normalization as docker does it: no domain (the first component has no ``.`` or ``:``
and is not ``localhost``) means ``docker.io``; ``index.docker.io`` and
``registry-1.docker.io`` are ``docker.io``; a one-component Docker Hub path gets
``library/``; no tag and no digest means tag ``latest``.

Locations (containers-transports(5)): ``docker://REF``, ``oci:DIR[:REF]``,
``oci-archive:FILE[:REF]``, ``docker-archive:FILE[:REF]``; a bare string is a docker
reference unless a transport is required (``bundler copy``, as skopeo). The ``REF`` of a
layout is the image's ``org.opencontainers.image.ref.name`` and follows the grammar of
image-spec ``annotations.md``::

    ref       ::= component ("/" component)*
    component ::= alphanum (separator alphanum)*
    alphanum  ::= [A-Za-z0-9]+
    separator ::= [-._:@+] | "--"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidReferenceError, LocationError
from .digest import Digest

__all__ = ["DOCKER_HUB", "LOCATION_FORMS", "Location", "Reference", "is_tag", "parse_location"]

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
#: Where ``docker.io`` is served from (distribution-spec endpoint of Docker Hub).
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.%]+\])"
_DOMAIN_RE = re.compile(rf"^{_HOST}(?::[0-9]+)?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_NAME_MAX = 255
_ALNUM = "[A-Za-z0-9]+"
_REF_COMPONENT = rf"{_ALNUM}(?:(?:[-._:@+]|--){_ALNUM})*"
_REF_NAME_RE = re.compile(rf"^{_REF_COMPONENT}(?:/{_REF_COMPONENT})*$")
#: The locations ``bundler copy`` accepts, for messages.
LOCATION_FORMS = ("docker://REFERENCE, oci:DIR[:REFERENCE], oci-archive:FILE[:REFERENCE] or "
                  "docker-archive:FILE[:REFERENCE]")
_TRANSPORT_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)(://|:)")


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        return DOCKER_HUB, name
    return first, rest


def is_tag(text: str) -> bool:
    """``text`` matches the distribution-spec tag grammar (at most 128 characters)."""
    return bool(_TAG_RE.fullmatch(text))


def _check_tag(text: str, tag: str) -> None:
    """Raise InvalidReferenceError (about ``text``) unless ``tag`` matches the
    distribution-spec tag grammar."""
    if not _TAG_RE.fullmatch(tag):
        why = "longer than 128 characters" if len(tag) > 128 else "not a valid tag"
        raise InvalidReferenceError(text, f"tag {tag!r} is {why}")


@dataclass(frozen=True)
class Reference:
    """A normalized image reference; ``str()`` gives the canonical full form.

    Attributes:
        registry: ``host[:port]`` (``docker.io`` for Docker Hub).
        repository: the path within the registry, e.g. ``library/alpine``.
        tag: the tag, or None when the reference is by digest only.
        digest: the digest, or None. With both, the digest decides what is fetched.

    Spec: distribution reference grammar; docker normalization.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = "latest") -> Reference:
        """Parse and normalize a reference such as ``alpine``, ``host:5000/a/b:1@sha256:...``.

        Args:
            text: the reference as the user wrote it.
            default_tag: tag used when neither tag nor digest is given (None: keep none).

        Raises:
            InvalidReferenceError: naming ``text`` and what is wrong with it.
        """
        if not isinstance(text, str) or not text or text != text.strip():
            raise InvalidReferenceError(str(text), "empty or surrounded by white space")
        if "://" in text:
            scheme = text.split("://", 1)[0]
            raise InvalidReferenceError(text, f"a reference has no scheme (drop the '{scheme}://')")
        rest, at, digest_text = text.partition("@")
        digest = None
        if at:
            try:
                digest = Digest.parse(digest_text)
            except InvalidReferenceError as exc:
                raise InvalidReferenceError(text, f"bad digest: {exc.reason}") from None
        name, tag = rest, None
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            name, tag = rest[:colon], rest[colon + 1 :]
            _check_tag(text, tag)
        registry, path = _split_domain(name)
        if not _DOMAIN_RE.fullmatch(registry):
            raise InvalidReferenceError(text, f"{registry!r} is not a valid registry host")
        registry = registry.lower()
        port = registry.rpartition("]")[2].rpartition(":")[2] if ":" in registry else ""
        if port.isdigit() and not 0 < int(port) < 65536:
            raise InvalidReferenceError(text, f"port {port} of {registry!r} is not 1-65535")
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
            if "/" not in path:
                path = f"library/{path}"
        if not path:
            raise InvalidReferenceError(text, "no repository name")
        for component in path.split("/"):
            if not _PATH_COMPONENT_RE.fullmatch(component):
                why = (
                    "repository name must be lowercase"
                    if component.lower() != component
                    else f"{component!r} is not a valid repository path component"
                )
                raise InvalidReferenceError(text, why)
        if len(registry) + 1 + len(path) > _NAME_MAX:
            raise InvalidReferenceError(text, f"name longer than {_NAME_MAX} characters")
        if tag is None and digest is None:
            tag = default_tag
        return cls(registry, path, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/`` in a request: the digest if any, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        if self.tag is None:
            raise InvalidReferenceError(str(self), "neither tag nor digest")
        return self.tag

    def with_digest(self, digest: Digest | None) -> Reference:
        """The same name and tag with ``digest``."""
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        """The same name and digest with ``tag``.

        Raises:
            InvalidReferenceError: ``tag`` does not match the distribution-spec tag
            grammar ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``.
        """
        if tag is not None:
            _check_tag(f"{self.name}:{tag}", tag)
        return Reference(self.registry, self.repository, tag, self.digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class Location:
    """Where images are: a registry reference or a local layout/archive.

    Attributes:
        transport: ``docker``, ``oci``, ``oci-archive`` or ``docker-archive``.
        path: the directory or file for local transports, else "".
        reference: for ``docker``: the parsed reference; for local transports: None.
        ref_name: for local transports, the image name inside (``oci:DIR:NAME``), or None.
    """

    transport: str
    path: str = ""
    reference: Reference | None = None
    ref_name: str | None = None

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.reference}"
        suffix = f":{self.ref_name}" if self.ref_name else ""
        return f"{self.transport}:{self.path}{suffix}"


def parse_location(text: str, *, require_transport: bool = False) -> Location:
    """Parse a transport-prefixed location (containers-transports(5)).

    ``oci:DIR:REF`` is split at the first ``:`` after the directory, as skopeo does
    (``oci:/srv/layout:docker.io/library/alpine:3.20`` is the directory
    ``/srv/layout`` and the name ``docker.io/library/alpine:3.20``); ``oci:DIR:`` (an
    empty name) is ``oci:DIR``.

    Args:
        text: the location as given.
        require_transport: refuse a bare reference (skopeo's rule); else a bare string is
            a docker reference.

    Returns:
        The :class:`Location`; ``docker-archive`` parses, whether a command supports it
        is the command's business.

    Raises:
        LocationError: no or an unknown transport (naming the accepted forms), a layout
            name outside the image-spec ``ref.name`` grammar.
        InvalidReferenceError: a bad docker reference, no path.
    """
    if text.startswith("docker://"):
        return Location("docker", reference=Reference.parse(text[len("docker://") :]))
    for transport in ("oci-archive", "docker-archive", "oci"):
        prefix = transport + ":"
        if text.startswith(prefix):
            path, _, ref_name = text[len(prefix) :].partition(":")
            if not path:
                raise InvalidReferenceError(text, f"{transport}: needs a path")
            if ref_name and not _REF_NAME_RE.fullmatch(ref_name):
                raise LocationError(text, f"{ref_name!r} is not a valid image name in a "
                                          "layout (letters, digits and -._:@+/ as "
                                          "image-spec annotations.md says)")
            return Location(transport, path=path, ref_name=ref_name or None)
    if require_transport:
        match = _TRANSPORT_RE.match(text)
        why = f"unknown transport {match.group(1)!r}" if match else "no transport"
        try:
            Reference.parse(text)
            hint = f" (an image in a registry: docker://{text})"
        except InvalidReferenceError:
            hint = ""
        raise LocationError(text, f"{why}; expected {LOCATION_FORMS}{hint}")
    return Location("docker", reference=Reference.parse(text))
