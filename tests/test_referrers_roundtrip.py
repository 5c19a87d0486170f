"""Referrers across the air gap and through mirrors, on real registries: Debian's
docker-registry (no referrers API: the referrers tag schema) and our registry with the
API. What ``oras discover`` finds on the destination equals what it finds on the
source; every referrer manifest and cosign tag has the source's bytes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.sandbox import LocalRegistry, make_image, make_index, make_layer, push
from tests.referrers_tools import attach, discover, push_app, push_cosign_signature

SIGNATURE = "sha256:6162308b7421163281afe8bd1c69ae16d50e675cbe93ff8b34f8ad5efb71a866"
ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def manifest(reg: LocalRegistry, repository: str, ref: str) -> bytes:
    response = httpx.get(f"{reg.url}/v2/{repository}/manifests/{ref}",
                         headers={"Accept": ACCEPT}, timeout=30)
    assert response.status_code == 200, (ref, response.status_code)
    return response.content


def signed(reg: LocalRegistry, tmp: Path, *, api: bool) -> dict[str, str]:
    """apps/signed:1.0 with a cosign .sig, an SBOM attached, and a signature of the SBOM."""
    image = push_app(reg)
    push_cosign_signature(reg, "apps/signed", image)
    sbom = attach(reg, "apps/signed:1.0", "example/sbom", tmp / "sbom", b"sbom", api=api)
    sbom_sig = attach(reg, f"apps/signed@{sbom['digest']}", "example/sig", tmp / "sig",
                      b"sig of sbom", api=api)
    return {"image": image, "sbom": sbom["digest"], "sbom_sig": sbom_sig["digest"]}


def same_bytes(src: LocalRegistry, dst: LocalRegistry, d: dict[str, str]) -> None:
    """Every referrer manifest and the cosign tag hold the source's bytes."""
    for digest in (d["sbom"], d["sbom_sig"], SIGNATURE):
        assert manifest(dst, "apps/signed", digest) == manifest(src, "apps/signed", digest)
    tag = d["image"].replace(":", "-") + ".sig"
    assert manifest(dst, "apps/signed", tag) == manifest(src, "apps/signed", tag)


def export_import(src: LocalRegistry, dst: LocalRegistry, tmp: Path) -> Path:
    bundle = tmp / "bundle"
    done = run_cli("export", f"{src.host}/apps/signed:1.0", "-o", str(bundle), "-q")
    assert done.exit_code == 0, done.output
    done = run_cli("import", str(bundle), "--to", dst.host, "-q")
    assert done.exit_code == 0, done.output
    return bundle


@pytest.mark.parametrize("kinds", ["tag-schema->tag-schema", "api->api", "api->tag-schema",
                                   "tag-schema->api"])
def test_export_import_keeps_referrers(kinds: str, registry_factory, referrers_registry,
                                       tmp_path: Path) -> None:
    src_api, dst_api = (k == "api" for k in kinds.split("->"))
    second = registry_factory()
    src = referrers_registry if src_api else registry_factory()
    dst = referrers_registry if dst_api and not src_api else second
    if src_api and dst_api:  # two registries with the API: a second one of ours
        from bundler.sandbox.referrers_registry import start_referrers_registry
        dst = start_referrers_registry(tmp_path / "dst-api")
    try:
        d = signed(src, tmp_path, api=src_api)
        export_import(src, dst, tmp_path)
        found = discover(src, "apps/signed:1.0", api=src_api)
        assert [r["digest"] for r in found] == sorted([d["sbom"]])
        assert [r["digest"] for r in found[0]["referrers"]] == [d["sbom_sig"]]
        assert discover(dst, "apps/signed:1.0", api=dst_api) == found
        same_bytes(src, dst, d)
    finally:
        if src_api and dst_api:
            dst.stop()


def test_existing_fallback_index_is_merged(registry_factory, tmp_path: Path) -> None:
    src, dst = registry_factory(), registry_factory()
    d = signed(src, tmp_path / "src", api=False)
    push_app(dst)  # the same image is there already, with another tool's referrer
    theirs = attach(dst, "apps/signed:1.0", "example/theirs", tmp_path / "theirs", b"x")
    tag = d["image"].replace(":", "-")
    before = json.loads(manifest(dst, "apps/signed", tag))["manifests"]
    export_import(src, dst, tmp_path)
    after = json.loads(manifest(dst, "apps/signed", tag))["manifests"]
    assert after[:1] == before  # theirs kept as it was, first
    assert [m["digest"] for m in after] == [theirs["digest"], d["sbom"]]
    assert [r["digest"] for r in discover(dst, "apps/signed:1.0")] == sorted(
        [theirs["digest"], d["sbom"]])


def test_no_op_reexport_and_reimport_move_no_referrer_bytes(registry_factory,
                                                             tmp_path: Path) -> None:
    src, dst = registry_factory(), registry_factory()
    d = signed(src, tmp_path, api=False)
    export_import(src, dst, tmp_path)
    mark_src, mark_dst = src.mark(), dst.mark()
    export_import(src, dst, tmp_path)
    src_log = src.access_log(mark_src)
    assert [r for r in src_log if "/blobs/" in r[1]] == []  # no blob read again
    # manifests read again: only the two referrers tag schema indexes (the listing of
    # the image's and of the SBOM's referrers), no referrer itself
    assert sorted(u for m, u, _ in src_log if m == "GET" and "/manifests/" in u) == sorted(
        f"/v2/apps/signed/manifests/{s.replace(':', '-')}" for s in (d["image"], d["sbom"]))
    dst_log = dst.access_log(mark_dst)
    assert [r for r in dst_log if r[0] in ("PUT", "POST", "PATCH")] == []  # nothing sent


def _extra_requests(reg: LocalRegistry, refs: list[str], tmp: Path) -> list[tuple[str, str]]:
    """The requests an export with referrer discovery makes beyond one without."""
    runs = []
    for name, flags in (("off", ["--no-referrers"]), ("on", [])):
        mark = reg.mark()
        done = run_cli("export", *refs, "-o", str(tmp / name), "-q", "-j", "1", *flags)
        assert done.exit_code == 0, done.output
        runs.append([(m, u) for m, u, _ in reg.access_log(mark)])
    off, on = runs
    extra = list(on)
    for request in off:
        extra.remove(request)
    return extra


def test_discovery_costs_at_most_two_requests_per_manifest(registry_factory, referrers_registry,
                                                           tmp_path: Path) -> None:
    """Nothing refers to the images: a registry without the API costs one tag list per
    repository and one referrers request in all (404 is learnt); one with the API, one
    tag list per repository and one referrers request per manifest."""
    plain = registry_factory()
    for reg in (plain, referrers_registry):
        one = push_app(reg, "apps/one", "1.0", seed=5)
        children = [make_image([make_layer({"f": b"%d" % i})], architecture=arch)
                    for i, arch in enumerate(["amd64", "arm64"])]
        index = make_index(children, attestations=False)
        push(reg, "apps/multi", index, tag="2.0")
        refs = [f"{reg.host}/apps/one:1.0", f"{reg.host}/apps/multi:2.0"]
        extra = sorted(_extra_requests(reg, refs, tmp_path / reg.host.replace(":", "_")))
        tags = [u.split("?")[0] for _m, u in extra if "/tags/list" in u]  # any page size
        asked = [u for _m, u in extra if "/referrers/" in u]
        assert all(m == "GET" for m, _u in extra)
        assert tags == ["/v2/apps/multi/tags/list", "/v2/apps/one/tags/list"]
        if reg is plain:  # 4 manifests: 3 requests (the 404 is learnt once)
            assert len(extra) == 3
            assert asked[0] in {f"/v2/apps/one/referrers/{one}",
                                f"/v2/apps/multi/referrers/{index.digest}"} | {
                f"/v2/apps/multi/referrers/{c.digest}" for c in children}
        else:  # 4 manifests: 6 requests
            assert sorted(asked) == sorted(
                [f"/v2/apps/one/referrers/{one}", f"/v2/apps/multi/referrers/{index.digest}"]
                + [f"/v2/apps/multi/referrers/{c.digest}" for c in children])
            assert len(extra) == 6


def test_mirror_keeps_referrers(registry_factory, referrers_registry, tmp_path: Path) -> None:
    src, dst = registry_factory(), referrers_registry
    d = signed(src, tmp_path, api=False)
    done = run_cli("mirror", f"{src.host}/apps/signed:1.0", "--to", f"{dst.host}/m", "-q")
    assert done.exit_code == 0, done.output
    found = discover(src, "apps/signed:1.0")
    assert discover(dst, "m/apps/signed:1.0", api=True) == found
    for digest in (d["sbom"], d["sbom_sig"], SIGNATURE):
        assert manifest(dst, "m/apps/signed", digest) == manifest(src, "apps/signed", digest)
    tag = d["image"].replace(":", "-") + ".sig"
    assert manifest(dst, "m/apps/signed", tag) == manifest(src, "apps/signed", tag)
    off = run_cli("mirror", f"{src.host}/apps/signed:1.0", "--to", f"{dst.host}/n", "-q",
                  "--no-referrers")
    assert off.exit_code == 0, off.output
    assert discover(dst, "n/apps/signed:1.0", api=True) == []


def test_archive_bundle_keeps_referrers(registry_factory, tmp_path: Path) -> None:
    """A .tar bundle: the referrers travel in it and the destination's referrers tag
    schema is written after the one-pass import."""
    src, dst = registry_factory(), registry_factory()
    d = signed(src, tmp_path, api=False)
    archive = tmp_path / "bundle.tar"
    done = run_cli("export", f"{src.host}/apps/signed:1.0", "-o", str(archive), "-q")
    assert done.exit_code == 0, done.output
    listed = json.loads(run_cli("list", str(archive), "--json").stdout)
    assert [r["digest"] for r in listed["images"][0]["referrers"]] == [SIGNATURE, d["sbom"]]
    done = run_cli("import", str(archive), "--to", dst.host, "-q")
    assert done.exit_code == 0, done.output
    assert discover(dst, "apps/signed:1.0") == discover(src, "apps/signed:1.0")
    same_bytes(src, dst, d)


def test_mapping_sends_referrers_with_their_subject(registry_factory, tmp_path: Path) -> None:
    """Import with --mapping, and copy between registries: each referrer goes to the
    repository its subject went to."""
    src, dst = registry_factory(), registry_factory()
    d = signed(src, tmp_path, api=False)
    bundle = tmp_path / "bundle"
    assert run_cli("export", f"{src.host}/apps/signed:1.0", "-o", str(bundle),
                   "-q").exit_code == 0
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"{src.host}/apps/signed:1.0={dst.host}/prod/app:v1\n")
    done = run_cli("import", str(bundle), "--mapping", str(mapping), "-q")
    assert done.exit_code == 0, done.output
    assert discover(dst, "prod/app:v1") == discover(src, "apps/signed:1.0")
    tag = d["image"].replace(":", "-") + ".sig"
    assert manifest(dst, "prod/app", tag) == manifest(src, "apps/signed", tag)
    done = run_cli("copy", f"docker://{src.host}/apps/signed:1.0",
                   f"docker://{dst.host}/copied/app:v1", "-q")
    assert done.exit_code == 0, done.output
    assert discover(dst, "copied/app:v1") == discover(src, "apps/signed:1.0")
    assert manifest(dst, "copied/app", tag) == manifest(src, "apps/signed", tag)


def test_referrer_of_an_index_child(referrers_registry, registry_factory, tmp_path: Path) -> None:
    """A signature of one platform's manifest of an index: exported, listed under the
    index, and discoverable on that child's digest at the destination."""
    src, dst = referrers_registry, registry_factory()
    children = [make_image([make_layer({"f": b"%d" % i})], architecture=arch)
                for i, arch in enumerate(["amd64", "arm64"])]
    index = make_index(children, attestations=False)
    push(src, "apps/multi", index, tag="2.0")
    arm = children[1].digest
    sig = attach(src, f"apps/multi@{arm}", "example/sig", tmp_path / "sig", b"arm", api=True)
    bundle = tmp_path / "bundle"
    done = run_cli("export", f"{src.host}/apps/multi:2.0", "-o", str(bundle), "-q")
    assert done.exit_code == 0, done.output
    listed = json.loads(run_cli("list", str(bundle), "--json").stdout)["images"]
    assert [(i["digest"], [(r["digest"], r["subject"], r["scheme"]) for r in i["referrers"]])
            for i in listed] == [(index.digest, [(sig["digest"], arm, "api")])]
    done = run_cli("import", str(bundle), "--to", dst.host, "-q")
    assert done.exit_code == 0, done.output
    found = discover(src, f"apps/multi@{arm}", api=True)
    assert [r["digest"] for r in found] == [sig["digest"]]
    assert discover(dst, f"apps/multi@{arm}") == found
    assert manifest(dst, "apps/multi", sig["digest"]) == manifest(src, "apps/multi", sig["digest"])


def test_same_image_in_two_repositories_keeps_both_signatures(registry_factory,
                                                              tmp_path: Path) -> None:
    """One image, signed in two repositories with the same signature bytes: each
    repository gets its cosign tag at the destination."""
    src, dst = registry_factory(), registry_factory()
    for repository in ("team-a/app", "team-b/app"):
        image = push_app(src, repository)
        push_cosign_signature(src, repository, image)
    bundle = tmp_path / "bundle"
    done = run_cli("export", f"{src.host}/team-a/app:1.0", f"{src.host}/team-b/app:1.0",
                   "-o", str(bundle), "-q")
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("exported 2 images and 2 referrers")
    assert run_cli("import", str(bundle), "--to", dst.host, "-q").exit_code == 0
    tag = image.replace(":", "-") + ".sig"
    for repository in ("team-a/app", "team-b/app"):
        assert manifest(dst, repository, tag) == manifest(src, repository, tag)
