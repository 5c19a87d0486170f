"""Unit tests of import naming: ``--to`` prefixes, ``--mapping`` files, tag-only layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler.engine.naming import check_to, parse_mapping, resolve_targets
from bundler.errors import MappingError
from bundler.oci.content import OCI_INDEX, OCI_MANIFEST, Descriptor, entry_name
from bundler.oci.digest import Digest
from bundler.oci.reference import Reference

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
D1 = Digest.parse("sha256:" + "1" * 64)
D2 = Digest.parse("sha256:" + "2" * 64)
D3 = Digest.parse("sha256:" + "3" * 64)
D4 = Digest.parse("sha256:" + "4" * 64)


def entry(digest: Digest, name: str | None = None, *, containerd: str | None = None,
          media_type: str = OCI_MANIFEST) -> Descriptor:
    """A layout ``index.json`` descriptor named like bundler (both annotations) or others."""
    annotations = {}
    if name is not None:
        annotations[REF_NAME] = name
    if containerd is not None:
        annotations[CONTAINERD_NAME] = containerd
    return Descriptor(media_type, digest, 512, annotations)


def bundle_entries() -> list[Descriptor]:
    """What ``bundler export`` writes: full references in both annotations."""
    names = [
        (D1, "docker.io/library/alpine:3.20", OCI_INDEX),
        (D2, "quay.io/org/app/server:v1", OCI_MANIFEST),
        (D3, "docker.io/library/busybox@" + str(D3), OCI_MANIFEST),
    ]
    return [entry(d, n, containerd=n, media_type=m) for d, n, m in names]


def destinations(targets: list) -> list[str]:
    return [str(t.destination) for t in targets]


# -- --to -------------------------------------------------------------------------------
def test_to_with_prefix_keeps_repository_path_and_tag() -> None:
    targets = resolve_targets(bundle_entries(), to="registry.internal:5000/mirror")
    assert [t.name for t in targets] == [
        "docker.io/library/alpine:3.20",
        "quay.io/org/app/server:v1",
        "docker.io/library/busybox@" + str(D3),
    ]
    assert destinations(targets) == [
        f"registry.internal:5000/mirror/library/alpine:3.20@{D1}",
        f"registry.internal:5000/mirror/org/app/server:v1@{D2}",
        f"registry.internal:5000/mirror/library/busybox@{D3}",
    ]
    first = targets[0].destination
    assert (first.registry, first.repository, first.tag, first.digest) == (
        "registry.internal:5000", "mirror/library/alpine", "3.20", D1)
    assert [t.descriptor for t in targets] == bundle_entries()


def test_to_registry_only_and_nested_prefix() -> None:
    assert destinations(resolve_targets(bundle_entries()[:2], to="localhost:5000")) == [
        f"localhost:5000/library/alpine:3.20@{D1}",
        f"localhost:5000/org/app/server:v1@{D2}",
    ]
    assert destinations(resolve_targets(bundle_entries()[:1], to="10.0.0.7:443/a/b/")) == [
        f"10.0.0.7:443/a/b/library/alpine:3.20@{D1}",
    ]


def test_digest_only_entry_is_pushed_by_digest() -> None:
    (target,) = resolve_targets(bundle_entries()[2:], to="registry.internal:5000/m")
    assert target.destination.tag is None
    assert target.destination.digest == D3
    assert target.destination.identifier == str(D3)


def test_containerd_name_wins_over_ref_name() -> None:
    both = entry(D1, "latest", containerd="ghcr.io/acme/tool:latest")
    assert entry_name(both) == "ghcr.io/acme/tool:latest"
    assert entry_name(entry(D1, "v2")) == "v2"
    assert entry_name(entry(D1)) == ""
    (target,) = resolve_targets([both], to="reg.local:5000")
    assert str(target.destination) == f"reg.local:5000/acme/tool:latest@{D1}"


def test_tag_only_layout_imports_into_the_full_repository() -> None:
    """skopeo ``oci:DIR:tag`` and umoci record only a tag in ref.name."""
    entries = [entry(D1, "v1.2"), entry(D2, "latest"), entry(D4)]
    targets = resolve_targets(entries, to="reg.local:5000/team/app")
    assert [t.name for t in targets] == ["v1.2", "latest", str(D4)]
    assert destinations(targets) == [
        f"reg.local:5000/team/app:v1.2@{D1}",
        f"reg.local:5000/team/app:latest@{D2}",
        f"reg.local:5000/team/app@{D4}",
    ]


def test_tag_only_entry_with_registry_only_names_the_entry() -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets([entry(D1, "v1.2")], to="reg.local:5000")
    assert str(info.value) == (
        "bundle entry 'v1.2' records no repository; give --to with the full repository "
        "(REGISTRY/REPOSITORY) or use --mapping"
    )


def test_unnamed_entry_with_registry_only_names_its_position_and_digest() -> None:
    entries = [*bundle_entries()[:1], entry(D4)]
    with pytest.raises(MappingError) as info:
        resolve_targets(entries, to="reg.local:5000/")
    assert str(info.value) == (
        "bundle entry #1 (sha256:444444444444, no name) records no repository; give --to "
        "with the full repository (REGISTRY/REPOSITORY) or use --mapping"
    )


@pytest.mark.parametrize("to, mapping", [(None, None), ("reg.local:5000", [])])
def test_exactly_one_of_to_and_mapping(to: str | None, mapping: list | None) -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), to=to, mapping=mapping)
    assert str(info.value) == "give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE"


def test_to_without_registry() -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), to="/mirror")
    assert str(info.value) == "--to '/mirror': expected REGISTRY[/PREFIX]"


def test_to_must_start_with_a_registry_host() -> None:
    """A first component that is no host (no '.', ':' or localhost) would mean Docker Hub."""
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), to="mirror/library")
    assert str(info.value) == (
        "--to 'mirror/library': 'mirror' is not a registry host; expected "
        "REGISTRY[/PREFIX] with REGISTRY like registry.internal:5000 or localhost"
    )


def test_to_with_invalid_repository_names_the_option() -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries()[:1], to="reg.local:5000/Mirror")
    assert str(info.value) == (
        "--to 'reg.local:5000/Mirror': repository name must be lowercase"
    )


# -- --mapping ----------------------------------------------------------------------------
def test_mapping_limits_and_renames() -> None:
    mapping = [
        ("docker.io/library/busybox@" + str(D3), "reg.local:5000/tools/busybox"),
        ("quay.io/org/app/server:v1", "reg.local:5000/prod/server:stable"),
    ]
    targets = resolve_targets(bundle_entries(), mapping=mapping)
    assert [t.name for t in targets] == ["docker.io/library/busybox@" + str(D3),
                                         "quay.io/org/app/server:v1"]
    assert destinations(targets) == [
        f"reg.local:5000/tools/busybox@{D3}",
        f"reg.local:5000/prod/server:stable@{D2}",
    ]


def test_mapping_source_short_name_or_digest_and_tag_kept() -> None:
    """SOURCE may be written as docker would (``alpine:3.20``) or be the image digest."""
    targets = resolve_targets(bundle_entries(), mapping=[
        ("alpine:3.20", "reg.local:5000/base/alpine"),
        (str(D2), "reg.local:5000/srv"),
    ])
    assert [t.name for t in targets] == ["docker.io/library/alpine:3.20",
                                         "quay.io/org/app/server:v1"]
    assert destinations(targets) == [
        f"reg.local:5000/base/alpine:3.20@{D1}",
        f"reg.local:5000/srv:v1@{D2}",
    ]


def test_mapping_of_a_tag_only_layout_entry() -> None:
    (target,) = resolve_targets([entry(D1, "v1.2"), entry(D2, "v2")],
                                mapping=[("v2", "reg.local:5000/app")])
    assert str(target.destination) == f"reg.local:5000/app:v2@{D2}"


@pytest.mark.parametrize("source", ["alpine", "library/alpine", "docker.io/library/alpine",
                                    "reg.local:5000/team/app"])
def test_mapping_source_without_tag_means_latest(source: str) -> None:
    entries = [entry(D1, "docker.io/library/alpine:3.20"), entry(D2, "docker.io/library/alpine:latest"),
               entry(D3, "reg.local:5000/team/app:latest")]
    (target,) = resolve_targets(entries, mapping=[(source, "reg.local:5000/m/x")])
    assert target.name == ("reg.local:5000/team/app:latest" if "team" in source
                           else "docker.io/library/alpine:latest")
    assert str(target.destination) == f"reg.local:5000/m/x:latest@{D3 if 'team' in source else D2}"


def test_mapping_bare_word_matches_a_tag_only_entry_before_latest() -> None:
    entries = [entry(D1, "alpine"), entry(D2, "docker.io/library/alpine:latest")]
    (target,) = resolve_targets(entries, mapping=[("alpine", "reg.local:5000/m/x")])
    assert target.descriptor.digest == D1


def test_mapping_source_not_in_bundle() -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), mapping=[("docker.io/library/nginx:1", "reg.local:5000/x")])
    assert str(info.value) == "mapping source 'docker.io/library/nginx:1' is not in the bundle"


def test_mapping_destination_invalid() -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), mapping=[("alpine:3.20", "reg.local:5000/Alpine")])
    assert str(info.value) == (
        "mapping destination 'reg.local:5000/Alpine': invalid reference "
        "'reg.local:5000/Alpine': repository name must be lowercase"
    )


def test_parse_mapping_ignores_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "mapping.txt"
    path.write_text(
        "# images for the DR site\n"
        "\n"
        "docker.io/library/alpine:3.20=reg.local:5000/base/alpine:3.20\n"
        "   # indented comment\n"
        "  quay.io/org/app/server:v1 = reg.local:5000/prod/server   # trailing comment\n"
        "docker.io/library/busybox@" + str(D3) + "=reg.local:5000/tools/busybox\n"
    )
    assert parse_mapping(path) == [
        ("docker.io/library/alpine:3.20", "reg.local:5000/base/alpine:3.20"),
        ("quay.io/org/app/server:v1", "reg.local:5000/prod/server"),
        ("docker.io/library/busybox@" + str(D3), "reg.local:5000/tools/busybox"),
    ]


@pytest.mark.parametrize("line", ["docker.io/library/alpine:3.20", "=reg.local:5000/x",
                                  "alpine:3.20="])
def test_parse_mapping_rejects_a_line_without_both_sides(tmp_path: Path, line: str) -> None:
    path = tmp_path / "mapping.txt"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(MappingError) as info:
        parse_mapping(path)
    assert str(info.value) == f"{path}:2: expected SOURCE=DESTINATION, got {line!r}"


def test_parse_mapping_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.txt"
    with pytest.raises(MappingError) as info:
        parse_mapping(path)
    assert str(info.value) == (
        f"cannot read mapping file {path}: [Errno 2] No such file or directory: '{path}'"
    )


def test_reference_of_destination_is_a_value() -> None:
    (target,) = resolve_targets(bundle_entries()[:1], to="reg.local:5000/m")
    assert target.destination == Reference("reg.local:5000", "m/library/alpine", "3.20", D1)


def test_mapping_by_digest_of_an_unnamed_entry_pushes_by_digest() -> None:
    unnamed = entry(D4)
    targets = resolve_targets([*bundle_entries(), unnamed],
                              mapping=[(str(D4), "registry.internal:5000/x/y")])
    assert [t.name for t in targets] == [str(D4)]
    assert targets[0].destination.tag is None
    assert destinations(targets) == [f"registry.internal:5000/x/y@{D4}"]


# -- destinations name their registry; one destination per image --------------------------
@pytest.mark.parametrize("destination", ["nohost/repo:1", "repo", "alpine:3.20",
                                         "Team/app"])
def test_mapping_destination_without_registry_host_is_refused(destination: str) -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), mapping=[("alpine:3.20", destination)])
    assert str(info.value) == (
        f"mapping destination {destination!r}: {destination!r} names no registry host; write "
        f"the registry first, e.g. registry.internal:5000/{destination} "
        f"(docker.io/{destination} for Docker Hub)"
    )


def test_mapping_destination_on_docker_hub_must_say_so() -> None:
    (target,) = resolve_targets(bundle_entries(), mapping=[("alpine:3.20",
                                                            "docker.io/team/alpine")])
    assert str(target.destination) == f"docker.io/team/alpine:3.20@{D1}"
    (target,) = resolve_targets(bundle_entries(), mapping=[("alpine:3.20", "localhost/a")])
    assert str(target.destination) == f"localhost/a:3.20@{D1}"


def test_parse_mapping_checks_destinations_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mapping.txt"
    path.write_text("alpine:3.20=reg.local:5000/a\n# c\nquay.io/org/app/server:v1=nohost/repo:1\n")
    with pytest.raises(MappingError) as info:
        parse_mapping(path)
    assert str(info.value) == (
        f"{path}:3: mapping destination 'nohost/repo:1': 'nohost/repo:1' names no registry "
        "host; write the registry first, e.g. registry.internal:5000/nohost/repo:1 "
        "(docker.io/nohost/repo:1 for Docker Hub)"
    )
    path.write_text("alpine:3.20=reg.local:5000/A\n")
    with pytest.raises(MappingError) as info:
        parse_mapping(path)
    assert str(info.value) == (
        f"{path}:1: mapping destination 'reg.local:5000/A': invalid reference "
        "'reg.local:5000/A': repository name must be lowercase"
    )


def test_two_mapping_lines_with_one_destination_are_refused() -> None:
    mapping = [("alpine:3.20", "reg.local:5000/app:1"),
               ("quay.io/org/app/server:v1", "reg.local:5000/app:1")]
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), mapping=mapping)
    assert str(info.value) == (
        "mapping sources 'alpine:3.20' and 'quay.io/org/app/server:v1' both go to "
        "reg.local:5000/app:1; give each image its own destination"
    )


def test_kept_tags_that_collide_are_refused_too() -> None:
    """No tag in the destination: the source tags decide, and may collide."""
    entries = [entry(D1, "docker.io/library/app:1", containerd="docker.io/library/app:1"),
               entry(D2, "quay.io/org/app:1", containerd="quay.io/org/app:1")]
    with pytest.raises(MappingError) as info:
        resolve_targets(entries, mapping=[("docker.io/library/app:1", "reg.local:5000/app"),
                                          ("quay.io/org/app:1", "reg.local:5000/app")])
    assert str(info.value) == (
        "mapping sources 'docker.io/library/app:1' and 'quay.io/org/app:1' both go to "
        "reg.local:5000/app:1; give each image its own destination"
    )


def test_to_that_sends_two_entries_to_one_tag_is_refused() -> None:
    entries = [entry(D1, "docker.io/library/app:1", containerd="docker.io/library/app:1"),
               entry(D2, "quay.io/library/app:1", containerd="quay.io/library/app:1")]
    with pytest.raises(MappingError) as info:
        resolve_targets(entries, to="reg.local:5000/m")
    assert str(info.value) == (
        "images 'docker.io/library/app:1' and 'quay.io/library/app:1' both go to "
        "reg.local:5000/m/library/app:1; use --mapping to give each its own destination"
    )


def test_by_digest_destinations_never_collide() -> None:
    targets = resolve_targets([entry(D3), entry(D4)], mapping=[
        (str(D3), "reg.local:5000/x"), (str(D4), "reg.local:5000/x")])
    assert destinations(targets) == [f"reg.local:5000/x@{D3}", f"reg.local:5000/x@{D4}"]


@pytest.mark.parametrize("to, message", [
    ("", "--to '': expected REGISTRY[/PREFIX]"),
    ("mirror", "--to 'mirror': 'mirror' is not a registry host; expected REGISTRY[/PREFIX] "
               "with REGISTRY like registry.internal:5000 or localhost"),
    ("reg.local:5000/Mirror", "--to 'reg.local:5000/Mirror': repository name must be lowercase"),
    ("reg.local:5000/mirror:tag", "--to 'reg.local:5000/mirror:tag': expected "
     "REGISTRY[/PREFIX] without a tag or digest (each image keeps its own tag)"),
    ("http://reg.local:5000/m", "--to 'http://reg.local:5000/m': expected REGISTRY[/PREFIX] "
     "without a scheme, e.g. reg.local:5000/m"),
    ("reg.local:5000/a//b", "--to 'reg.local:5000/a//b': '' is not a valid repository path "
     "component"),
])
def test_check_to_needs_no_bundle(to: str, message: str) -> None:
    with pytest.raises(MappingError) as info:
        check_to(to)
    assert str(info.value) == message


def test_mapping_destination_with_another_digest_is_refused() -> None:
    with pytest.raises(MappingError) as info:
        resolve_targets(bundle_entries(), mapping=[
            ("quay.io/org/app/server:v1", f"reg.local:5000/x/server@{D4}")])
    assert str(info.value) == (
        f"mapping destination 'reg.local:5000/x/server@{D4}' names digest {D4}, but "
        f"'quay.io/org/app/server:v1' is {D2}; a push keeps the digest, so "
        "drop the digest or give the image's own")


def test_mapping_destination_with_the_image_digest_keeps_the_source_tag() -> None:
    targets = resolve_targets(bundle_entries(), mapping=[
        ("quay.io/org/app/server:v1", f"reg.local:5000/x/server@{D2}")])
    assert destinations(targets) == [f"reg.local:5000/x/server:v1@{D2}"]


def test_an_empty_mapping_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(MappingError) as info:
        parse_mapping(path)
    assert str(info.value) == f"{path}: no SOURCE=DESTINATION lines: nothing to import"


@pytest.mark.parametrize("name", ["v1?x=1", "v2#frag", "Not A Ref!!", "..", "v4 ", "t" * 129])
def test_a_bare_name_that_is_no_tag_is_refused_before_anything_moves(name: str) -> None:
    """A query or fragment in a bare entry name would otherwise tag the image under
    another name than the one reported; the registry refuses other bad names only after
    the blobs went up."""
    with pytest.raises(MappingError) as info:
        resolve_targets([entry(D1, "v1"), entry(D2, name)], to="reg.local:5000/team/app")
    assert str(info.value).startswith(f"bundle entry {name!r} is neither a reference nor a "
                                      "valid tag (tag ")
    assert str(info.value).endswith("); use --mapping to say where it goes")
    with pytest.raises(MappingError) as info:
        resolve_targets([entry(D2, name)], mapping=[(str(D2), "reg.local:5000/team/app")])
    assert f"bundle entry {name!r} is not a valid tag" in str(info.value)
    targets = resolve_targets([entry(D2, name)], mapping=[(str(D2), "reg.local:5000/a:ok")])
    assert destinations(targets) == [f"reg.local:5000/a:ok@{D2}"]


@pytest.mark.parametrize("text", ["127.0.0.1:99999/base/os:1", "127.0.0.1:0/a", "h.io:65536/a"])
def test_a_port_out_of_range_is_an_invalid_reference(text: str) -> None:
    from bundler.errors import InvalidReferenceError

    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert "is not 1-65535" in str(info.value)
    assert str(Reference.parse("127.0.0.1:65535/a:1")) == "127.0.0.1:65535/a:1"


def test_a_digest_source_maps_every_entry_of_that_image() -> None:
    """web:1.0 and web:latest are one image; a mapping line naming its digest imports
    both tags, and a repeated line or a tagged destination pushes it once."""
    entries = [entry(D1, "quay.io/org/web:1.0", containerd="quay.io/org/web:1.0"),
               entry(D1, "quay.io/org/web:latest", containerd="quay.io/org/web:latest"),
               entry(D2, "quay.io/org/api:1", containerd="quay.io/org/api:1")]
    targets = resolve_targets(entries, mapping=[(str(D1), "reg.local:5000/m/web")])
    assert [t.name for t in targets] == ["quay.io/org/web:1.0", "quay.io/org/web:latest"]
    assert destinations(targets) == [f"reg.local:5000/m/web:1.0@{D1}",
                                     f"reg.local:5000/m/web:latest@{D1}"]
    once = resolve_targets(entries, mapping=[(str(D1), "reg.local:5000/m/web:stable")] * 2)
    assert destinations(once) == [f"reg.local:5000/m/web:stable@{D1}"]
    named = resolve_targets(entries, mapping=[("quay.io/org/web:latest", "reg.local:5000/w")])
    assert destinations(named) == [f"reg.local:5000/w:latest@{D1}"]
    with pytest.raises(MappingError, match="both go to reg.local:5000/x:1"):
        resolve_targets(entries, mapping=[(str(D1), "reg.local:5000/x:1"),
                                          (str(D2), "reg.local:5000/x:1")])
