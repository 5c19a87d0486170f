"""Image sets: what to select, from the command line or from one YAML file.

An :class:`ImageSet` is a list of :class:`Entry` (a repository, or every repository of a
registry's catalog, with the tags to take) and a ``blocked`` list of reference regexes
applied last. :func:`read_image_set` reads skopeo's sync YAML as it is, plus our keys::

    registry.example.com:                 # a registry host[:port]
      images:
        busybox: []                       # all tags
        redis: ["1.0", "2.0", "sha256:..."]   # these tags and digests
        app:                              # ours: a mapping
          tags: {include: ['1\\..*'], exclude: ['.*-debug'], semver: '>=1.2.0 <2', latest: 5}
          all-tags: true                  # every tag (no filter needed)
          platforms: [linux/amd64, linux/arm64]
          platform-mode: strip            # or sparse, or single (one platform)
      images-by-tag-regex:
        nginx: ^1\\.13\\.[12]-alpine-perl$  # Go-style: matches anywhere unless anchored
      images-by-semver:
        alpine: ">= 3.12.0"
      repositories:                       # ours: walk /v2/_catalog
        include: ['team-a/.*']
        exclude: ['.*-old']
        tags: {latest: 3}                 # or all-tags: true
      tls-verify: true
      cert-dir: /home/john/certs
      credentials: {username: john, password: secret}
    blocked:                              # ours: reference regexes (re.search), last
      - ':.*-debug$'

The whole file is checked before any request; every error is reported with its line
(:class:`ImageSetError`).

Spec: skopeo-sync(1) "YAML file content"; YAML 1.1 (PyYAML).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import BundlerError, InvalidReferenceError
from ..oci.content import Platform
from ..oci.digest import Digest
from ..oci.platforms import PLATFORM_MODES, PlatformChoice, parse_platform
from ..oci.reference import Reference
from .tagfilter import FilterError, TagFilter, parse_range
from .yamlcheck import NodeChecker

__all__ = ["Entry", "ImageSet", "ImageSetError", "RegistrySettings", "read_image_set"]

_REGISTRY_KEYS = {"images", "images-by-tag-regex", "images-by-semver", "repositories",
                  "tls-verify", "cert-dir", "credentials"}
_PLATFORM_KEYS = {"platforms", "platform-mode"}
_ENTRY_KEYS = {"tags", "all-tags"} | _PLATFORM_KEYS
_TAG_KEYS = {"include", "exclude", "semver", "latest"}
_REPOSITORY_KEYS = {"include", "exclude", "tags", "all-tags"} | _PLATFORM_KEYS
_MERGE = "tag:yaml.org,2002:merge"


class ImageSetError(BundlerError, ValueError):
    """An image set that cannot be used; ``errors`` lists every problem found, each
    ``FILE:LINE: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class Entry:
    """One selection of an image set.

    Attributes:
        registry: ``host[:port]``.
        repository: the repository, or None for every repository of the catalog.
        origin: where it was given: ``command line`` or ``FILE:LINE``.
        references: explicit tags and digests (``images: repo: [...]``).
        tags: the filter over the listed tags, or None when only ``references`` count.
        include_repositories, exclude_repositories: regexes over catalog names (full match).
        platforms: the platforms to keep of its indexes, or None (all, or the command
            line's ``--platform``).
    """

    registry: str
    repository: str | None
    origin: str
    references: tuple[str, ...] = ()
    tags: TagFilter | None = None
    include_repositories: tuple[str, ...] = ()
    exclude_repositories: tuple[str, ...] = ()
    platforms: PlatformChoice | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` or ``registry (catalog)``."""
        return f"{self.registry}/{self.repository}" if self.repository else \
            f"{self.registry} (catalog)"


@dataclass(frozen=True)
class RegistrySettings:
    """A registry's own transport settings from the file (None: the command line's)."""

    tls_verify: bool | None = None
    cert_dir: Path | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


@dataclass
class ImageSet:
    """Entries, the blocked regexes, and per-registry settings.

    Attributes:
        entries: in the order given.
        blocked: reference regexes; a resolved reference one matches (``re.search``
            over ``registry/repository:tag``) is left out.
        settings: registry -> its settings from the file.
    """

    entries: list[Entry] = field(default_factory=list)
    blocked: tuple[str, ...] = ()
    settings: dict[str, RegistrySettings] = field(default_factory=dict)


def read_image_set(path: str | os.PathLike[str]) -> ImageSet:
    """Read and check an image-set YAML file (skopeo sync's format plus our keys).

    Args:
        path: the file (UTF-8).

    Returns:
        The :class:`ImageSet`; entries in file order.

    Raises:
        ImageSetError: the file cannot be read, is not YAML, or has errors; every error
        found is listed with ``FILE:LINE``.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageSetError([f"{name}: cannot read the image set: {exc}"]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ImageSetError([f"{at}: not YAML: {problem}"]) from exc
    except RecursionError as exc:
        raise ImageSetError([f"{name}: not an image set: nested too deeply"]) from exc
    check = NodeChecker(name)
    result = ImageSet()
    if root is None:
        raise ImageSetError([f"{name}: the image set is empty"])
    try:
        _merge_keys(check, root, set())
    except RecursionError as exc:
        raise ImageSetError([f"{name}: not an image set: nested too deeply"]) from exc
    for key, value in check.mapping(root, "the image set"):
        host = key.value
        if host == "blocked":
            result.blocked = check.regexes(value, "a blocked regex")
            continue
        try:
            Reference.parse(f"{host}/x")
            if "/" in host or "." not in host and ":" not in host and host != "localhost":
                raise InvalidReferenceError(host, "not a registry host")
        except InvalidReferenceError:
            check.error(key, f"{host!r} is not a registry host[:port] (or 'blocked')")
            continue
        _registry(check, host, value, result)
    if check.errors:
        raise ImageSetError(check.errors)
    if not result.entries:
        raise ImageSetError([f"{name}: the image set selects no images"])
    return result


def _merge_keys(check: NodeChecker, node: yaml.Node, done: set[int]) -> None:
    """Resolve YAML merge keys (``<<: *defaults``, as skopeo's YAML parser does) in place
    throughout the tree: the merged mappings' keys join each mapping, after its own
    keys, which win (then the first mapping merged)."""
    if id(node) in done:
        return
    done.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _merge_keys(check, item, done)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    own, merged = [], []
    for key, value in node.value:
        if key.tag != _MERGE:
            own.append((key, value))
            continue
        for source in value.value if isinstance(value, yaml.SequenceNode) else [value]:
            if not isinstance(source, yaml.MappingNode):
                check.error(source, "a merge key ('<<') takes a mapping or a list of mappings")
                continue
            _merge_keys(check, source, done)
            merged.extend(source.value)
    names = {key.value for key, _ in own if isinstance(key, yaml.ScalarNode)}
    for key, value in merged:
        if not isinstance(key, yaml.ScalarNode) or key.value not in names:
            names.add(key.value)
            own.append((key, value))
    node.value = own
    for _, value in own:
        _merge_keys(check, value, done)


def _registry(check: NodeChecker, host: str, node: yaml.Node, out: ImageSet) -> None:
    """One registry's section: its images, settings and catalog entry."""
    settings: dict[str, Any] = {}
    for key, value in check.mapping(node, f"registry {host!r}"):
        name = key.value
        if name not in _REGISTRY_KEYS:
            check.unknown(key, name, _REGISTRY_KEYS, f"registry {host!r}")
        elif name == "tls-verify":
            settings["tls_verify"] = check.boolean(value, "tls-verify")
        elif name == "cert-dir":
            settings["cert_dir"] = Path(d) if (d := check.string(value, "cert-dir")) else None
            if d and not Path(d).is_dir():  # as --src-cert-dir: exit 2
                check.error(value, f"cert-dir {d!r} is no directory")
        elif name == "credentials":
            for k, v in check.mapping(value, "credentials"):
                if k.value not in ("username", "password"):
                    check.unknown(k, k.value, {"username", "password"}, "credentials")
                else:
                    settings[k.value] = check.string(v, k.value, allow_number=True)
        elif name == "repositories":
            _catalog_entry(check, host, value, out)
        else:
            for repo_key, repo_value in check.mapping(value, name):
                _repository(check, host, name, repo_key, repo_value, out)
    out.settings[host] = RegistrySettings(**settings)


def _repository(check: NodeChecker, host: str, section: str, key: yaml.Node, value: yaml.Node,
                out: ImageSet) -> None:
    """One repository of ``images``, ``images-by-tag-regex`` or ``images-by-semver``."""
    repo = key.value
    origin = check.at(key)
    try:
        parsed = Reference.parse(f"{host}/{repo}", default_tag=None)
        if ":" in repo or "@" in repo:
            raise InvalidReferenceError(repo, "a repository has no tag or digest here")
    except InvalidReferenceError as exc:
        check.error(key, f"{repo!r} is not a repository: {exc}")
        return
    repo = parsed.repository  # docker.io's busybox is library/busybox, as skopeo reads it
    if section == "images-by-tag-regex":
        for pattern in check.regexes(value, "images-by-tag-regex"):
            out.entries.append(Entry(host, repo, origin, tags=TagFilter.build(
                include=[pattern], search=True)))
    elif section == "images-by-semver":
        text = check.string(value, "images-by-semver", allow_number=True)
        if text is not None:
            try:
                out.entries.append(Entry(host, repo, origin, tags=TagFilter.build(
                    semver=text, where=f"{check.at(value)}: images-by-semver")))
            except FilterError as exc:
                check.errors.append(str(exc))
    elif isinstance(value, yaml.MappingNode):
        tags = _entry_tags(check, value, f"{host}/{repo}", _ENTRY_KEYS)
        platforms = _entry_platforms(check, value)
        if tags is not None:
            out.entries.append(Entry(host, repo, origin, tags=tags, platforms=platforms))
    elif (isinstance(value, yaml.SequenceNode) and not value.value) or (
            isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null")):
        out.entries.append(Entry(host, repo, origin, tags=TagFilter()))  # skopeo: all tags
    else:
        refs = []
        for item in value.value if isinstance(value, yaml.SequenceNode) else [value]:
            text = check.string(item, "a tag or digest", allow_number=True)
            if text is None:
                continue
            try:
                if text.startswith("sha") and ":" in text:
                    Digest.parse(text)
                else:
                    Reference(host, repo).with_tag(text)
            except InvalidReferenceError as exc:
                check.error(item, f"{text!r} is not a tag or digest: {exc}")
                continue
            refs.append(text)
        if refs:
            out.entries.append(Entry(host, repo, origin, references=tuple(refs)))


def _entry_tags(check: NodeChecker, node: yaml.Node, what: str,
                known: set[str]) -> TagFilter | None:
    """The ``tags``/``all-tags`` keys of a mapping: the filter, or None after an error."""
    filter_: TagFilter | None = None
    all_tags = False
    ok = True
    for key, value in check.mapping(node, what):
        name = key.value
        if name not in known:
            check.unknown(key, name, known, what)
            ok = False
        elif name in ("include", "exclude") or name in _PLATFORM_KEYS:
            continue  # read by the caller
        elif name == "all-tags":
            all_tags = bool(check.boolean(value, "all-tags"))
        elif name == "tags":
            filter_ = _tag_filter(check, value, what)
            ok = ok and filter_ is not None
    if not ok:
        return None
    if filter_ is None and not all_tags:
        check.error(node, f"{what}: give tags: {{include, exclude, semver, latest}} or "
                          "all-tags: true")
        return None
    return filter_ or TagFilter()


def _tag_filter(check: NodeChecker, node: yaml.Node, what: str) -> TagFilter | None:
    """``tags: {include, exclude, semver, latest}``; each key checked on its own."""
    values: dict[str, Any] = {}
    before = len(check.errors)
    for key, value in check.mapping(node, f"tags of {what}"):
        name = key.value
        if name not in _TAG_KEYS:
            check.unknown(key, name, _TAG_KEYS, f"tags of {what}")
        elif name in ("include", "exclude"):
            values[name] = check.regexes(value, f"tags.{name}")
        elif name == "semver":
            text = check.string(value, "tags.semver", allow_number=True)
            try:
                if text is not None:
                    parse_range(text, f"{check.at(value)}: tags.semver")
                    values[name] = text
            except FilterError as exc:
                check.errors.append(str(exc))
        elif (count := _whole_number(value)) is not None and count >= 1:
            values[name] = count
        else:
            check.error(value, "tags.latest must be a whole number of 1 or more")
    if len(check.errors) > before:
        return None
    return TagFilter.build(**values)


def _whole_number(node: yaml.Node) -> int | None:
    """The value of a YAML 1.1 integer scalar (``5``, ``0x10``, ``1_000``, ``1:30``), or
    None for any other node."""
    if not (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int")):
        return None
    try:
        return int(yaml.constructor.SafeConstructor().construct_yaml_int(node))
    except (ValueError, yaml.YAMLError):
        return None


def _catalog_entry(check: NodeChecker, host: str, node: yaml.Node, out: ImageSet) -> None:
    """``repositories: {include, exclude, tags | all-tags}``: the catalog's repositories."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    for key, value in node.value if isinstance(node, yaml.MappingNode) else []:
        if key.value == "include":
            include = check.regexes(value, "repositories.include")
        elif key.value == "exclude":
            exclude = check.regexes(value, "repositories.exclude")
    tags = _entry_tags(check, node, f"repositories of {host!r}", _REPOSITORY_KEYS)
    platforms = _entry_platforms(check, node)
    if tags is not None:
        out.entries.append(Entry(host, None, check.at(node), tags=tags,
                                 include_repositories=include, exclude_repositories=exclude,
                                 platforms=platforms))


def _entry_platforms(check: NodeChecker, node: yaml.Node) -> PlatformChoice | None:
    """``platforms: [OS/ARCH[/VARIANT], ...]`` and ``platform-mode`` of an entry."""
    platforms: list[Platform] = []
    mode, mode_node, every = "strip", node, False
    for key, value in node.value if isinstance(node, yaml.MappingNode) else []:
        if key.value == "platforms":
            for text in check.strings(value, "a platform"):
                if text == "all":
                    every = True
                    continue
                try:
                    platforms.append(parse_platform(text))
                except ValueError as exc:
                    check.error(value, f"platforms: {exc}")
        elif key.value == "platform-mode":
            mode_node = value
            text = check.string(value, "platform-mode")
            if text is not None and text not in PLATFORM_MODES:
                check.error(value, f"platform-mode {text!r} is not one of "
                                   f"{', '.join(PLATFORM_MODES)}")
            mode = text or mode
    if every and platforms:
        check.error(node, "platforms: 'all' keeps every platform; give it alone")
    if mode == "single" and len(platforms) != 1:
        check.error(mode_node, "platform-mode single keeps exactly one platform; "
                               f"{len(platforms)} given")
    return PlatformChoice(tuple(dict.fromkeys(platforms)), mode) if platforms else None
