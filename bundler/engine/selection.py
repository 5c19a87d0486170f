"""Resolve an image set into the references the engines take, in parallel.

:func:`resolve_image_set` walks each catalog entry's ``/v2/_catalog``, lists the tags of
every repository that needs them (each repository once, ``jobs`` at a time, through one
:class:`~bundler.registry.pool.ClientPool`), applies each entry's
:class:`~bundler.engine.tagfilter.TagFilter`, then the ``blocked`` regexes, and records
for each reference which entry and filter selected it. No manifest is fetched: a tag
that is deleted between the listing and the transfer is found by the transfer, and
:func:`tolerate_vanished` reports and skips it.

Spec: distribution-spec "Listing Tags"; Docker Registry HTTP API V2 "Catalog".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import (
    AccessDeniedError,
    AuthenticationError,
    InvalidReferenceError,
    NotFoundError,
    PartialFailureError,
    RegistryError,
    TransferError,
)
from ..oci.digest import Digest
from ..oci.platforms import PlatformChoice
from ..oci.reference import Reference, is_tag
from ..registry.client import TransportOptions
from ..registry.credentials import Credentials, Keychain
from .imageset import Entry, ImageSet
from .parallel import ClientPool, raise_first, run_parallel
from .tagfilter import FilterError, TagFilter, compile_regex

__all__ = ["CatalogError", "Resolution", "Selected", "cli_image_set", "plan_without_vanished",
           "resolve_image_set", "tolerate_vanished", "transport_for"]

R = TypeVar("R")


class CatalogError(RegistryError):
    """A registry that does not serve ``/v2/_catalog`` (Docker Hub, GHCR)."""


@dataclass(frozen=True)
class Selected:
    """One reference of a resolved image set.

    Attributes:
        reference: the image reference (with a tag, or a digest given in the set).
        origin: where its entry was given: ``command line`` or ``FILE:LINE``.
        selected_by: the filter that kept it: ``given``, ``all tags``, or the filter in
            the command line's words (``--semver '>=1 <2' --latest 5``).
        listed: it came from a tags list (it may vanish before it is fetched).
        platforms: the platforms its entry keeps of an index, or None.
    """

    reference: Reference
    origin: str
    selected_by: str
    listed: bool
    platforms: PlatformChoice | None = None


@dataclass
class Resolution:
    """What an image set resolved to.

    Attributes:
        selected: the references, in entry order, each once (its first entry).
        blocked: references a ``blocked`` regex removed, with the regex.
        repositories: repositories whose tags were listed.
        tags_listed: tags those lists held in all.
    """

    selected: list[Selected] = field(default_factory=list)
    blocked: list[tuple[Selected, str]] = field(default_factory=list)
    repositories: int = 0
    tags_listed: int = 0

    @property
    def references(self) -> list[Reference]:
        """The selected references, for the engines."""
        return [s.reference for s in self.selected]

    @property
    def platforms(self) -> dict[str, PlatformChoice]:
        """Reference -> the platforms its entry keeps, for those whose entry says."""
        return {str(s.reference): s.platforms for s in self.selected
                if s.platforms is not None}

    def to_json(self) -> dict[str, Any]:
        """``{"selected": [{reference, entry, selectedBy, listed}], "blocked": [...]}``."""
        def item(s: Selected) -> dict[str, Any]:
            out = {"reference": str(s.reference), "entry": s.origin,
                   "selectedBy": s.selected_by, "listed": s.listed}
            if s.platforms is not None:
                out.update(platforms=[str(p) for p in s.platforms.platforms],
                           platformMode=s.platforms.mode)
            return out
        return {"selected": [item(s) for s in self.selected],
                "blocked": [dict(item(s), blockedBy=p) for s, p in self.blocked],
                "repositories": self.repositories, "tagsListed": self.tags_listed}


def cli_image_set(arguments: Sequence[str], *, all_repositories: bool = False,
                  include_repositories: Sequence[str] = (),
                  exclude_repositories: Sequence[str] = (),
                  tags: TagFilter | None = None) -> ImageSet:
    """The image set of the command line: ``REG/REPO`` arguments (all their tags, or
    ``tags``), or ``REG`` arguments with ``all_repositories``.

    Raises:
        InvalidReferenceError: an argument that is no repository (or no registry), or
        that names a tag or digest. FilterError: a repository regex that does not compile.
    """
    include = tuple(include_repositories)
    exclude = tuple(exclude_repositories)
    for pattern in include:
        compile_regex(pattern, "--include-repositories")
    for pattern in exclude:
        compile_regex(pattern, "--exclude-repositories")
    result = ImageSet()
    for text in arguments:
        if all_repositories:
            try:
                Reference.parse(f"{text}/x")
                if "/" in text:
                    raise InvalidReferenceError(text, "not a registry host")
            except InvalidReferenceError:
                raise InvalidReferenceError(
                    text, "--all-repositories takes registries (HOST[:PORT])") from None
            result.entries.append(Entry(text, None, "command line", tags=tags or TagFilter(),
                                        include_repositories=include,
                                        exclude_repositories=exclude))
            continue
        ref = Reference.parse(text, default_tag=None)
        if ref.tag is not None or ref.digest is not None:
            raise InvalidReferenceError(text, "tag options select tags of a repository: "
                                              "give REGISTRY/REPOSITORY without a tag")
        result.entries.append(Entry(ref.registry, ref.repository, "command line",
                                    tags=tags or TagFilter()))
    return result


def transport_for(image_set: ImageSet, options: TransportOptions | None) -> TransportOptions:
    """``options`` with the set's per-registry ``tls-verify``, ``cert-dir`` and
    ``credentials`` (see :attr:`TransportOptions.registries`)."""
    base = options or TransportOptions()
    overrides = dict(base.registries)
    for host, settings in image_set.settings.items():
        changes: dict[str, Any] = {}
        if settings.tls_verify is not None:
            changes["tls_verify"] = settings.tls_verify
        if settings.cert_dir is not None:
            changes["cert_dir"] = settings.cert_dir
        if settings.username is not None:
            authfile = base.keychain.authfile if base.keychain else None
            changes["keychain"] = Keychain(
                Credentials(settings.username, settings.password or ""), authfile)
        if changes:
            overrides[host] = dataclasses.replace(base, registries={}, **changes)
    return dataclasses.replace(base, registries=overrides)


def resolve_image_set(image_set: ImageSet, *, options: TransportOptions | None = None,
                      jobs: int = 8, clients: ClientPool | None = None) -> Resolution:
    """Resolve every entry of ``image_set`` into references.

    Args:
        image_set: from :func:`~bundler.engine.imageset.read_image_set` or
            :func:`cli_image_set`.
        options: transport options of the source registries (the set's own settings
            are added, see :func:`transport_for`).
        jobs: concurrent catalog and tags-list requests.
        clients: a pool to use (its options then apply); None: a pool of its own.

    Returns:
        A :class:`Resolution`.

    Raises:
        CatalogError: a registry that serves no catalog. RegistryError: a repository
        whose tags cannot be listed (naming it). TransferError: another failure of a
        listing (naming the repository).
    """
    pool = clients or ClientPool(transport_for(image_set, options))
    try:
        return _resolve(image_set, pool, jobs)
    finally:
        if clients is None:
            pool.close()


def _resolve(image_set: ImageSet, pool: ClientPool, jobs: int) -> Resolution:
    catalogs: dict[str, list[str]] = {}
    hosts = list(dict.fromkeys(e.registry for e in image_set.entries if e.repository is None))

    def walk(host: str) -> None:
        catalogs[host] = _catalog(pool, host)

    failures = run_parallel(hosts, walk, jobs=jobs)
    for host in hosts:
        if host in failures:
            raise failures[host]
    plan: list[tuple[Entry, str]] = []
    for entry in image_set.entries:
        if entry.repository is not None:
            plan.append((entry, entry.repository))
            continue
        inc = [compile_regex(p, f"{entry.origin}: repositories include")
               for p in entry.include_repositories]
        exc = [compile_regex(p, f"{entry.origin}: repositories exclude")
               for p in entry.exclude_repositories]
        for name in catalogs[entry.registry]:
            if (not inc or any(r.fullmatch(name) for r in inc)) and \
                    not any(r.fullmatch(name) for r in exc):
                plan.append((entry, name))
    # each repository listed once; its entries' filters applied in the same task, so
    # that filtering overlaps with the other tasks' requests
    users: dict[tuple[str, str], list[int]] = {}
    for number, (entry, repo) in enumerate(plan):
        if entry.tags is not None:
            users.setdefault((entry.registry, repo), []).append(number)
    wanted = list(users)
    listed: dict[tuple[str, str], int] = {}
    kept: dict[int, list[str]] = {}

    def list_tags(key: tuple[str, str]) -> None:
        tags = pool.get(key[0]).list_tags(key[1])
        listed[key] = len(tags)
        tags = [t for t in tags if is_tag(t)]  # others cannot be fetched: no filter sees them
        for number in users[key]:
            kept[number] = plan[number][0].tags.apply(tags)  # type: ignore[union-attr]

    failures = run_parallel(wanted, list_tags, jobs=jobs)
    for key in wanted:  # a regex that backtracks without end, or the registry's answer:
        failure = failures.get(key)  # their own words name the repository
        if isinstance(failure, (FilterError, RegistryError)):
            raise failure
    raise_first({f"{host}/{repo}": exc for (host, repo), exc in failures.items()},
                [f"{host}/{repo}" for host, repo in wanted])
    result = Resolution(repositories=len(wanted), tags_listed=sum(listed.values()))
    seen: set[str] = set()
    blocked = [(p, compile_regex(p, "a blocked regex")) for p in image_set.blocked]
    for number, (entry, repo) in enumerate(plan):
        for selected in _select(entry, repo, kept.get(number, [])):
            key = str(selected.reference)
            if key in seen:
                continue
            seen.add(key)
            hit = next((p for p, r in blocked if r.search(key)), None)
            if hit is not None:
                result.blocked.append((selected, hit))
            else:
                result.selected.append(selected)
    return result


def _select(entry: Entry, repo: str, kept: list[str]) -> list[Selected]:
    """The references one entry selects in one repository (``kept``: the listed tags its
    filter kept)."""
    out = []
    for text in entry.references:
        if text.startswith("sha") and ":" in text:
            ref = Reference(entry.registry, repo, None, Digest.parse(text))
        else:
            ref = Reference(entry.registry, repo).with_tag(text)
        out.append(Selected(ref, entry.origin, "given", False, entry.platforms))
    if entry.tags is not None:
        by = entry.tags.describe()
        for tag in kept:
            try:
                ref = Reference(entry.registry, repo).with_tag(tag)
            except InvalidReferenceError:
                continue  # a registry that lists a malformed tag: it cannot be fetched
            out.append(Selected(ref, entry.origin, by, True, entry.platforms))
    return out


def _catalog(pool: ClientPool, host: str) -> list[str]:
    """The catalog of ``host`` (names outside the spec's repository grammar left out: no
    request could name them), or a :class:`CatalogError` that says it serves none."""
    try:
        return [name for name in pool.get(host).catalog() if _is_repository(host, name)]
    except (NotFoundError, AuthenticationError, AccessDeniedError) as exc:
        status = exc.status
        hint = ("; check the credentials, or" if isinstance(exc, AuthenticationError)
                else ";")
        raise CatalogError(
            f"{host} does not serve the catalog (GET /v2/_catalog answered {status})"
            f"{hint} name its repositories instead (Docker Hub and GHCR serve no catalog)",
            status=status, codes=exc.codes, url=exc.url, registry=host) from exc
    except RegistryError as exc:
        if exc.status in (400, 405, 501):
            raise CatalogError(
                f"{host} does not serve the catalog (GET /v2/_catalog answered "
                f"{exc.status}); name its repositories instead", status=exc.status,
                codes=exc.codes, url=exc.url, registry=host) from exc
        raise


def _is_repository(host: str, name: str) -> bool:
    try:
        ref = Reference.parse(f"{host}/{name}", default_tag=None)
    except InvalidReferenceError:
        return False
    return ref.tag is None and ref.digest is None


def tolerate_vanished(action: Callable[[bool], R], resolution: Resolution, *,
                      keep_going: bool, on_vanished: Callable[[str], None]) -> R:
    """Run an export or mirror of ``resolution``'s references, skipping listed tags that
    the registry no longer serves.

    Args:
        action: runs the transfer, given whether to keep going after a failed image
            (True whenever some references were listed, so that a vanished tag does not
            stop the others).
        resolution: what the references came from.
        keep_going: the user's ``--keep-going``.
        on_vanished: called with each vanished reference.

    Returns:
        What ``action`` returned; when only vanished tags failed, the result of the
        others.

    Raises:
        PartialFailureError: other images failed (the vanished ones are not counted);
        TransferError: without ``keep_going``, the first of them. What ``action`` raises.
    """
    listed = {str(s.reference) for s in resolution.selected if s.listed}
    if not listed:
        return action(keep_going)
    try:
        return action(True)
    except PartialFailureError as exc:
        others: list[TransferError] = []
        for failure in exc.failures:
            if failure.image in listed and _is_not_found(failure):
                on_vanished(failure.image)
            else:
                others.append(failure)
        if not others:
            return exc.result  # type: ignore[return-value]
        if keep_going or len(others) > 1:
            raise PartialFailureError(others, exc.result) from exc
        raise others[0] from exc


def plan_without_vanished(plan: Callable[[list[Reference]], R], resolution: Resolution, *,
                          on_vanished: Callable[[str], None]) -> R:
    """Work out a dry run's plan of ``resolution``'s references as the transfer would
    run: listed tags that the registry no longer serves are left out (each given to
    ``on_vanished``), not fatal.

    Args:
        plan: works out the plan of the references it is given.

    Raises:
        What ``plan`` raises for another failure.
    """
    refs = resolution.references
    listed = {str(s.reference) for s in resolution.selected if s.listed}
    while True:
        try:
            return plan(refs)
        except TransferError as exc:
            if exc.image not in listed or not _is_not_found(exc):
                raise
            on_vanished(exc.image)
            listed.discard(exc.image)
            refs = [r for r in refs if str(r) != exc.image]


def _is_not_found(error: BaseException) -> bool:
    """The cause chain of ``error`` holds a 404 of the manifest."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, NotFoundError):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False
