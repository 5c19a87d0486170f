"""registry/referrers.py on real registries: the referrers API (our Go registry over
go-containerregistry) and the referrers tag schema (Debian's docker-registry, which has
no referrers API), with referrers made by ``oras attach``."""

from __future__ import annotations

import json
from pathlib import Path

from bundler.oci.content import OCI_INDEX, Descriptor, parse_manifest
from bundler.oci.digest import Digest
from bundler.registry.client import RegistryClient, TransportOptions
from bundler.registry.referrers import (
    ReferrersApi,
    cosign_tags,
    fallback_tag,
    list_referrers,
    merge_fallback_index,
    read_fallback_index,
    referrer_descriptor,
)
from bundler.sandbox import LocalRegistry
from tests.referrers_tools import attach, discover, push_app

SUBJECT = Digest.parse("sha256:" + "ab" * 32)


def _client(reg: LocalRegistry) -> RegistryClient:
    return RegistryClient(reg.host, TransportOptions(retries=1))


def test_tag_names() -> None:
    assert fallback_tag(SUBJECT) == "sha256-" + "ab" * 32
    assert cosign_tags(SUBJECT) == ["sha256-" + "ab" * 32 + s for s in (".sig", ".att", ".sbom")]


def test_api_lists_and_filters(referrers_registry: LocalRegistry, tmp_path: Path) -> None:
    reg = referrers_registry
    digest = Digest.parse(push_app(reg))
    sbom = attach(reg, "apps/signed:1.0", "example/sbom", tmp_path / "a", api=True)
    sig = attach(reg, "apps/signed:1.0", "example/sig", tmp_path / "b", b"sig", api=True)
    with _client(reg) as client:
        api = ReferrersApi()
        found = list_referrers(client, "apps/signed", digest, api=api)
        assert found is not None
        assert sorted((str(d.digest), d.size, d.artifact_type) for d in found) == sorted(
            [(sbom["digest"], sbom["size"], "example/sbom"),
             (sig["digest"], sig["size"], "example/sig")])
        mark = reg.mark()
        only = list_referrers(client, "apps/signed", digest, artifact_types=["example/sig"],
                              api=api)
        assert [str(d.digest) for d in only or []] == [sig["digest"]]
        assert reg.requests(mark) == [
            ("GET", f"/v2/apps/signed/referrers/{digest}?artifactType=example%2Fsig")]
        assert not api.absent(reg.host)


def test_no_api_is_learnt_once(registry: LocalRegistry) -> None:
    digest = Digest.parse(push_app(registry))
    with _client(registry) as client:
        api = ReferrersApi()
        mark = registry.mark()
        assert list_referrers(client, "apps/signed", digest, api=api) is None
        assert list_referrers(client, "apps/signed", digest, api=api) is None
        assert registry.requests(mark) == [  # the ping, then one referrers request
            ("GET", "/v2/"), ("GET", f"/v2/apps/signed/referrers/{digest}")]
        assert api.absent(registry.host)


def test_fallback_index_written_by_oras(registry: LocalRegistry, tmp_path: Path) -> None:
    digest = Digest.parse(push_app(registry))
    sbom = attach(registry, "apps/signed:1.0", "example/sbom", tmp_path)
    with _client(registry) as client:
        index = read_fallback_index(client, "apps/signed", digest)
        assert index is not None
        assert [(str(d.digest), d.size, d.artifact_type) for d in index.manifests] == [
            (sbom["digest"], sbom["size"], "example/sbom")]
        assert read_fallback_index(client, "apps/signed",
                                   Digest.parse("sha256:" + "cd" * 32)) is None


def test_merge_keeps_what_is_there(registry: LocalRegistry, tmp_path: Path) -> None:
    """Another tool's referrer in the fallback index stays; ours is added after it;
    oras then discovers both; merging again writes nothing."""
    digest = Digest.parse(push_app(registry))
    theirs = attach(registry, "apps/signed:1.0", "example/theirs", tmp_path / "a")
    with _client(registry) as client:
        before = client.get_manifest("apps/signed", fallback_tag(digest))[0]
        # our referrer: pushed by digest (as an import pushes it), then merged
        ours_raw = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "example/ours",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                       "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                       "data": "e30="},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                        "data": "e30="}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": str(digest), "size": 0},
            "annotations": {"a": "b"}}, separators=(",", ":")).encode()
        ours_digest = client.put_manifest("apps/signed", str(Digest.of(ours_raw)), ours_raw,
                                          "application/vnd.oci.image.manifest.v1+json")
        ours = referrer_descriptor(parse_manifest(ours_raw))
        assert ours == Descriptor("application/vnd.oci.image.manifest.v1+json", ours_digest,
                                  len(ours_raw), {"a": "b"}, None, "example/ours")
        assert merge_fallback_index(client, "apps/signed", digest, [ours]) is True
        raw, media_type, _ = client.get_manifest("apps/signed", fallback_tag(digest))
        assert media_type == OCI_INDEX
        kept = json.loads(before)["manifests"]
        assert json.loads(raw)["manifests"] == kept + [ours.to_dict()]
        assert merge_fallback_index(client, "apps/signed", digest, [ours]) is False
    assert [d["digest"] for d in discover(registry, "apps/signed:1.0")] == sorted(
        [theirs["digest"], str(ours_digest)])
