"""Unit tests of bundler.reference: the distribution reference grammar, docker
normalization and transport-prefixed locations."""

from __future__ import annotations

import pytest

from bundler.errors import InvalidReferenceError
from bundler.oci.digest import Digest
from bundler.oci.reference import Location, Reference, parse_location

HEX = "6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "canonical"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", "docker.io/library/alpine:latest"),
        ("alpine:3.20", "docker.io", "library/alpine", "3.20", "docker.io/library/alpine:3.20"),
        ("index.docker.io/x", "docker.io", "library/x", "latest", "docker.io/library/x:latest"),
        (
            "registry-1.docker.io/library/x",
            "docker.io",
            "library/x",
            "latest",
            "docker.io/library/x:latest",
        ),
        ("docker.io/library/x:1", "docker.io", "library/x", "1", "docker.io/library/x:1"),
        ("user/app", "docker.io", "user/app", "latest", "docker.io/user/app:latest"),
        ("host:5000/a/b:1", "host:5000", "a/b", "1", "host:5000/a/b:1"),
        ("localhost/x", "localhost", "x", "latest", "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000", "x", "latest", "localhost:5000/x:latest"),
        ("[::1]:5000/x:t", "[::1]:5000", "x", "t", "[::1]:5000/x:t"),
        ("127.0.0.1:5000/a_b/c-d.e__f:v1.2-rc_3", "127.0.0.1:5000", "a_b/c-d.e__f", "v1.2-rc_3",
         "127.0.0.1:5000/a_b/c-d.e__f:v1.2-rc_3"),
        ("ghcr.io/org/charts/podinfo:6.4.0", "ghcr.io", "org/charts/podinfo", "6.4.0",
         "ghcr.io/org/charts/podinfo:6.4.0"),
    ],
)
def test_parse_normalizes_like_docker(
    text: str, registry: str, repository: str, tag: str, canonical: str
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry, repository, tag, None,
    )
    assert str(ref) == canonical
    assert ref.name == canonical.rsplit(":", 1)[0]
    assert ref.identifier == tag


def test_name_with_tag_and_digest_keeps_both_and_identifier_is_the_digest() -> None:
    ref = Reference.parse(f"name:tag@{DIGEST}")
    assert ref == Reference("docker.io", "library/name", "tag", Digest("sha256", HEX))
    assert ref.identifier == DIGEST
    assert str(ref) == f"docker.io/library/name:tag@{DIGEST}"


def test_digest_only_reference_gets_no_default_tag() -> None:
    ref = Reference.parse(f"host:5000/a/b@{DIGEST}")
    assert ref.tag is None
    assert ref.digest == Digest.parse(DIGEST)
    assert ref.identifier == DIGEST
    assert str(ref) == f"host:5000/a/b@{DIGEST}"


def test_default_tag_none_keeps_no_tag() -> None:
    ref = Reference.parse("host:5000/a", default_tag=None)
    assert ref.tag is None and ref.digest is None
    with pytest.raises(InvalidReferenceError) as info:
        _ = ref.identifier
    assert str(info.value) == "invalid reference 'host:5000/a': neither tag nor digest"


def test_with_digest_and_with_tag() -> None:
    ref = Reference.parse("host:5000/a:1")
    pinned = ref.with_digest(Digest.parse(DIGEST))
    assert str(pinned) == f"host:5000/a:1@{DIGEST}"
    assert str(pinned.with_tag(None)) == f"host:5000/a@{DIGEST}"
    assert str(ref.with_tag("2")) == "host:5000/a:2"


@pytest.mark.parametrize(
    "text",
    [
        "docker.io/library/alpine:latest",
        "host:5000/a/b:1",
        f"host:5000/a/b:1@{DIGEST}",
        f"host:5000/a/b@{DIGEST}",
        "[::1]:5000/x:t",
        "localhost/x:latest",
    ],
)
def test_str_round_trips(text: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == text
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Alpine", "invalid reference 'Alpine': repository name must be lowercase"),
        ("host:5000/Apps/web:1",
         "invalid reference 'host:5000/Apps/web:1': repository name must be lowercase"),
        ("a:" + "t" * 129,
         f"invalid reference 'a:{'t' * 129}': tag {'t' * 129!r} is longer than 128 characters"),
        ("a:-bad", "invalid reference 'a:-bad': tag '-bad' is not a valid tag"),
        ("a@sha256:abc",
         "invalid reference 'a@sha256:abc': bad digest: "
         "a sha256 digest has 64 lowercase hex characters"),
        (f"a@md5:{HEX}",
         f"invalid reference 'a@md5:{HEX}': bad digest: unsupported digest algorithm 'md5'"),
        ("a@sha256", "invalid reference 'a@sha256': bad digest: a digest looks like sha256:<64 hex>"),
        ("", "invalid reference '': empty or surrounded by white space"),
        (" alpine", "invalid reference ' alpine': empty or surrounded by white space"),
        ("docker://alpine",
         "invalid reference 'docker://alpine': a reference has no scheme (drop the 'docker://')"),
        ("host:5000/", "invalid reference 'host:5000/': no repository name"),
        ("host:5000/a//b",
         "invalid reference 'host:5000/a//b': '' is not a valid repository path component"),
        ("a/b_-c", "invalid reference 'a/b_-c': 'b_-c' is not a valid repository path component"),
        ("-host:5000/x", "invalid reference '-host:5000/x': '-host:5000' is not a valid registry host"),
    ],
)
def test_invalid_references_name_the_input_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert str(info.value) == message
    assert info.value.text == text


def test_tag_of_128_characters_is_valid() -> None:
    assert Reference.parse("a:" + "t" * 128).tag == "t" * 128


def test_name_longer_than_255_characters_is_rejected() -> None:
    text = "host:5000/" + "a" * 250
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert info.value.reason == "name longer than 255 characters"


def test_invalid_reference_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Reference.parse("UPPER")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("docker://alpine:3.20",
         Location("docker", reference=Reference("docker.io", "library/alpine", "3.20"))),
        ("host:5000/a:1", Location("docker", reference=Reference("host:5000", "a", "1"))),
        ("oci:/tmp/bundle:docker.io/library/alpine:3.20",
         Location("oci", path="/tmp/bundle", ref_name="docker.io/library/alpine:3.20")),
        ("oci:./dir", Location("oci", path="./dir", ref_name=None)),
        ("oci-archive:/tmp/b.tar:app:1",
         Location("oci-archive", path="/tmp/b.tar", ref_name="app:1")),
        ("oci-archive:b.tar", Location("oci-archive", path="b.tar", ref_name=None)),
        ("docker-archive:/tmp/save.tar",
         Location("docker-archive", path="/tmp/save.tar", ref_name=None)),
    ],
)
def test_parse_location(text: str, expected: Location) -> None:
    assert parse_location(text) == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("docker://alpine", "docker://docker.io/library/alpine:latest"),
        ("oci:/tmp/bundle:app:1", "oci:/tmp/bundle:app:1"),
        ("oci-archive:/tmp/b.tar", "oci-archive:/tmp/b.tar"),
        ("docker-archive:/tmp/save.tar", "docker-archive:/tmp/save.tar"),
    ],
)
def test_location_str(text: str, canonical: str) -> None:
    assert str(parse_location(text)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("oci:", "invalid reference 'oci:': oci: needs a path"),
        ("oci-archive::x", "invalid reference 'oci-archive::x': oci-archive: needs a path"),
        ("docker://Bad", "invalid reference 'Bad': repository name must be lowercase"),
    ],
)
def test_parse_location_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_location(text)
    assert str(info.value) == message
