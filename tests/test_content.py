"""Unit tests of bundler.content on real manifests, indexes and layout files
(tests/fixtures, with the sha256 of each file listed in tests/fixtures/README.md)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from bundler.errors import ManifestError
from bundler.oci.content import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
    parse_manifest,
)
from bundler.oci.digest import Digest

FIXTURES = Path(__file__).parent / "fixtures"


def readme_sha256() -> dict[str, str]:
    """File name -> sha256 as listed in the fixture README."""
    text = (FIXTURES / "README.md").read_text()
    return dict(re.findall(r"### `([^`]+)`.*?- sha256: `([0-9a-f]{64})`", text, re.S))


SHA256 = readme_sha256()


def load(name: str) -> tuple[bytes, Manifest | Index]:
    raw = (FIXTURES / name).read_bytes()
    return raw, parse_manifest(raw)


def test_readme_lists_every_fixture_and_the_bytes_match() -> None:
    files = {p.name for p in FIXTURES.iterdir() if p.name != "README.md"}
    assert set(SHA256) == files
    assert len(files) == 38
    for name, sha in SHA256.items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == sha, name


CONTENT_ADDRESSED = [
    "docker-schema2-manifest.busybox.json",
    "docker-manifest-list.busybox.json",
    "oci-image-manifest.hello-world.json",
    "oci-image-index.multi-platform.json",
    "oci-index-attestations.hello-world.json",
    "cosign-signature-manifest.quay.json",
    "cosign-signature-manifest.keyless-ghcr.json",
    "helm-chart-manifest.podinfo.json",
    "oci11-artifact-with-subject.oras.json",
    "oci11-notation-signature-manifest.json",
    "oci11-referrers-tag-index.notation.json",
    "oci-manifest-zstd.handmade.json",
    "foreign-layer-manifest.handmade.json",
    "docker-save-v25.image-manifest.json",
]


@pytest.mark.parametrize("name", CONTENT_ADDRESSED)
def test_digest_is_over_the_raw_bytes_which_are_kept(name: str) -> None:
    raw, item = load(name)
    assert str(item.digest) == f"sha256:{SHA256[name]}"
    assert item.raw is raw
    assert item.size == len(raw)


def test_given_digest_is_not_recomputed() -> None:
    raw = (FIXTURES / "oci-image-manifest.hello-world.json").read_bytes()
    other = Digest.of(b"other")
    assert parse_manifest(raw, digest=other).digest == other


def test_docker_schema2_manifest() -> None:
    _, item = load("docker-schema2-manifest.busybox.json")
    assert isinstance(item, Manifest)
    assert item.media_type == DOCKER_MANIFEST
    assert item.manifests == ()
    assert item.config == Descriptor(
        "application/vnd.docker.container.image.v1+json",
        Digest.parse("sha256:" + SHA256["docker-image-config.busybox.json"]),
        1457,
    )
    assert [(d.media_type, str(d.digest), d.size) for d in item.layers] == [
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "sha256:405fecb6a2fa4f29683f977e7e3b852bf6f8975a2aba647d234d2371894943da",
            772999,
        )
    ]
    assert item.blobs == (item.config, *item.layers)


def test_docker_manifest_list() -> None:
    _, item = load("docker-manifest-list.busybox.json")
    assert isinstance(item, Index)
    assert item.media_type == DOCKER_MANIFEST_LIST
    assert item.blobs == ()
    assert [str(d.platform) for d in item.manifests] == [
        "linux/amd64", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7",
        "linux/arm64/v8", "linux/386", "linux/ppc64le", "linux/s390x",
    ]
    assert {d.media_type for d in item.manifests} == {DOCKER_MANIFEST}
    assert all(d.is_manifest for d in item.manifests)
    assert str(item.manifests[0].digest) == (
        "sha256:030fcb92e1487b18c974784dcc110a93147c9fc402188370fbfd17efabffc6af"
    )


def test_oci_manifest_chain_to_its_config() -> None:
    _, item = load("oci-image-manifest.hello-world.json")
    assert isinstance(item, Manifest)
    assert item.media_type == OCI_MANIFEST
    assert item.config is not None
    assert item.config.media_type == "application/vnd.oci.image.config.v1+json"
    assert item.config.digest.hex == SHA256["oci-image-config.hello-world.json"]
    assert item.config.size == (FIXTURES / "oci-image-config.hello-world.json").stat().st_size
    assert item.annotations["com.docker.official-images.bashbrew.arch"] == "amd64"
    assert len(item.annotations) == 7


def test_oci_index_with_attestations_keeps_every_child() -> None:
    _, item = load("oci-index-attestations.hello-world.json")
    assert isinstance(item, Index)
    assert item.media_type == OCI_INDEX
    assert len(item.manifests) == 20
    platforms = item.manifests[0::2]
    attestations = item.manifests[1::2]
    assert [str(d.platform) for d in platforms] == [
        "linux/amd64", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm64/v8",
        "linux/386", "linux/mips64le", "linux/ppc64le", "linux/riscv64", "linux/s390x",
    ]
    assert platforms[0].digest.hex == SHA256["oci-image-manifest.hello-world.json"]
    assert platforms[0].size == 1035
    for image, attestation in zip(platforms, attestations, strict=True):
        assert attestation.platform == Platform("unknown", "unknown")
        assert attestation.size == 566
        assert attestation.annotations["vnd.docker.reference.digest"] == str(image.digest)
        assert attestation.annotations["vnd.docker.reference.type"] == "attestation-manifest"
    assert len({d.digest for d in item.manifests}) == 20


def test_oci_index_multi_platform() -> None:
    _, item = load("oci-image-index.multi-platform.json")
    assert isinstance(item, Index)
    assert [str(d.platform) for d in item.manifests] == [
        "linux/amd64", "linux/arm64", "linux/s390x", "linux/ppc64le",
    ]
    assert str(item.manifests[1].digest).startswith("sha256:02f29c27")


def test_helm_chart_manifest_without_media_type_is_an_oci_manifest() -> None:
    raw, item = load("helm-chart-manifest.podinfo.json")
    assert "mediaType" not in json.loads(raw)
    assert isinstance(item, Manifest)
    assert item.media_type == OCI_MANIFEST
    assert item.config is not None
    assert (item.config.media_type, item.config.digest.hex, item.config.size) == (
        "application/vnd.cncf.helm.config.v1+json", SHA256["helm-chart-config.podinfo.json"], 348,
    )
    assert [(d.media_type, d.size) for d in item.layers] == [
        ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", 14225),
    ]


def test_cosign_keyless_signature_manifest() -> None:
    _, item = load("cosign-signature-manifest.keyless-ghcr.json")
    assert isinstance(item, Manifest)
    assert item.config is not None
    assert item.config.digest.hex == SHA256["cosign-signature-config.podinfo.json"]
    (layer,) = item.layers
    assert layer.media_type == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer.digest.hex == SHA256["cosign-simplesigning-payload.podinfo.json"]
    assert layer.size == 244
    assert set(layer.annotations) == {
        "dev.cosignproject.cosign/signature",
        "dev.sigstore.cosign/bundle",
        "dev.sigstore.cosign/certificate",
        "dev.sigstore.cosign/chain",
    }


def test_cosign_key_based_signature_manifest() -> None:
    _, item = load("cosign-signature-manifest.quay.json")
    assert isinstance(item, Manifest)
    assert [(d.media_type, d.size) for d in item.blobs] == [
        ("application/vnd.oci.image.config.v1+json", 233),
        ("application/vnd.dev.cosign.simplesigning.v1+json", 261),
    ]
    assert set(item.layers[0].annotations) == {
        "dev.cosignproject.cosign/signature", "dev.sigstore.cosign/bundle",
    }


def test_oci11_artifact_with_subject() -> None:
    _, item = load("oci11-artifact-with-subject.oras.json")
    assert isinstance(item, Manifest)
    assert item.artifact_type == "sbom/file"
    assert item.subject == Descriptor(
        OCI_MANIFEST,
        Digest.parse("sha256:6aa11331ce0c766d6333b60dac98d584d98eea45fa93bbfc9b5bdb915ce3a43f"),
        584,
    )
    assert item.config is not None
    assert (item.config.media_type, item.config.size) == ("application/vnd.oci.empty.v1+json", 2)
    assert str(item.config.digest) == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )
    assert dict(item.annotations) == {"org.opencontainers.image.created": "2025-06-05T04:31:39Z"}


def test_notation_signature_and_its_referrers_tag_index() -> None:
    _, signature = load("oci11-notation-signature-manifest.json")
    assert isinstance(signature, Manifest)
    assert signature.artifact_type is None
    assert signature.config is not None
    assert signature.config.media_type == "application/vnd.cncf.notary.signature"
    assert [d.media_type for d in signature.layers] == ["application/jose+json"]
    assert signature.subject is not None
    assert str(signature.subject.digest) == (
        "sha256:b8479de3f88fb259a0a9ea82a5b2a052a1ef3c4ebbcfc61482d5ae4c831f8af9"
    )
    _, index = load("oci11-referrers-tag-index.notation.json")
    assert isinstance(index, Index)
    (child,) = index.manifests
    assert child.digest == signature.digest
    assert child.artifact_type == "application/vnd.cncf.notary.signature"


def test_schema1_signed_manifest_is_refused_with_a_clear_message() -> None:
    raw = (FIXTURES / "docker-schema1-signed.hello-world.json").read_bytes()
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw)
    assert str(info.value) == (
        f"manifest sha256:{SHA256['docker-schema1-signed.hello-world.json']}: schema1 is not "
        "supported (Docker image manifest v2 schema 1 is deprecated); rebuild or re-push the "
        "image with schema 2 or OCI"
    )


def test_docker_save_v25_index_with_null_manifests_is_an_empty_index() -> None:
    raw, item = load("docker-save-v25.index.json")
    assert json.loads(raw)["manifests"] is None
    assert isinstance(item, Index)
    assert item.media_type == OCI_INDEX
    assert item.manifests == ()


def test_docker_save_v25_image_manifest_with_platform_on_config() -> None:
    _, item = load("docker-save-v25.image-manifest.json")
    assert isinstance(item, Manifest)
    assert item.config is not None
    assert item.config.platform == Platform("linux", "arm64")


@pytest.mark.parametrize(
    ("name", "entries", "distinct"),
    [("oci-layout-index.oras.json", 6, 4), ("oci-layout-index.crane.json", 6, 4)],
)
def test_layout_index_files_of_other_tools(name: str, entries: int, distinct: int) -> None:
    _, item = load(name)
    assert isinstance(item, Index)
    assert len(item.manifests) == entries
    assert len({d.digest for d in item.manifests}) == distinct


def test_oras_layout_index_keeps_full_reference_names() -> None:
    _, item = load("oci-layout-index.oras.json")
    assert isinstance(item, Index)
    names = [d.annotations.get("org.opencontainers.image.ref.name") for d in item.manifests]
    assert "ghcr.io/stefanprodan/charts/podinfo:6.4.0" in names
    helm = [d for d in item.manifests if d.digest.hex == SHA256["helm-chart-manifest.podinfo.json"]]
    assert len(helm) == 1 and helm[0].platform is None


def test_descriptor_to_dict_keeps_unknown_fields() -> None:
    _, item = load("oci-layout-index.crane.json")
    assert isinstance(item, Index)
    raw_children = json.loads((FIXTURES / "oci-layout-index.crane.json").read_bytes())["manifests"]
    for descriptor, raw in zip(item.manifests, raw_children, strict=True):
        assert descriptor.to_dict() == raw


def test_foreign_layers_are_listed_with_their_media_types() -> None:
    _, item = load("foreign-layer-manifest.handmade.json")
    assert isinstance(item, Manifest)
    assert [d.media_type for d in item.layers] == [
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ]
    assert sum(d.size for d in item.layers) == 51354364 + 152 + 11739507 + 8841833 + 291


@pytest.mark.parametrize(
    "name",
    [
        "oci-image-config.hello-world.json",
        "docker-image-config.busybox.json",
        "oci-layout.oras.json",
        "docker-save-legacy.repositories.json",
    ],
)
def test_json_that_is_not_a_manifest_is_refused(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw)
    assert str(info.value) == (
        f"manifest sha256:{SHA256[name]}: not an image manifest or index "
        "(schemaVersion None, expected 2)"
    )


def test_docker_save_manifest_json_is_refused() -> None:
    raw = (FIXTURES / "docker-save-v25.manifest.json").read_bytes()
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw)
    assert str(info.value) == "manifest is not a JSON object"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "manifest is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff\xfe", "manifest is not valid JSON"),
        (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
         b'"manifests":{"a":1}}', "'manifests' must be a list"),
        (b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1},'
         b'"layers":[]}', "a sha256 digest has 64 lowercase hex characters"),
        (b'{"schemaVersion":2,"layers":[{"mediaType":"x","digest":"sha256:' + b"0" * 64
         + b'","size":-1}]}', "descriptor size must be a non-negative integer"),
        (b'{"schemaVersion":2,"mediaType":"application/vnd.example+json"}',
         "unsupported manifest media type 'application/vnd.example+json'"),
    ],
)
def test_malformed_manifests(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw)
    assert message in str(info.value)
