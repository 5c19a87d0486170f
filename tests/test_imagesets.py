"""Image sets on real registries: all tags, tag filters, catalogs, list-tags, inspect,
dry-run resolutions, tags that vanish, registries without a catalog."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.engine.imageset import ImageSet
from bundler.engine.selection import CatalogError, cli_image_set, resolve_image_set
from bundler.engine.tagfilter import TagFilter
from bundler.registry.client import RegistryClient, TransportOptions
from bundler.sandbox import (
    LocalRegistry,
    make_image,
    make_index,
    push,
    random_layer,
    start_registry,
)
from bundler.sandbox.imagesets import MANY_TAGS, seed_catalog, seed_many_tags
from bundler.sandbox.registry import REGISTRY_BINARY

PLAIN = TransportOptions(tls_verify=False, retries=0)
CATALOG = [f"team-a/svc-{i:02d}" for i in range(12)] + \
    [f"team-b/svc-{i:02d}" for i in range(12)] + [f"tools/t{i}" for i in range(8)]


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, dict]]:
    """apps/many with MANY_TAGS (+ one digest-only manifest), 32 catalog repositories, a
    multi-arch index with attestations at multi/arch:1."""
    import os
    if not os.access(REGISTRY_BINARY, os.X_OK):
        pytest.skip("docker-registry missing")
    registry = start_registry(tmp_path_factory.mktemp("imagesets"))
    try:
        digests = seed_many_tags(registry)
        seed_catalog(registry, CATALOG, tags=("1.0.0", "1.1.0", "latest"))
        amd = make_image([random_layer(1, 100)], architecture="amd64")
        arm = make_image([random_layer(2, 100)], architecture="arm64", variant="v8")
        index = make_index([amd, arm])
        push(registry, "multi/arch", index, tag="1")
        yield registry, {"digests": digests, "index": index, "amd": amd}
    finally:
        registry.stop()


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def resolved(host: str, filter_: TagFilter, repo: str = "apps/many") -> list[str]:
    image_set = cli_image_set([f"{host}/{repo}"], tags=filter_)
    return [r.tag for r in resolve_image_set(image_set, options=PLAIN).references]


# -- 1. repositories: tags list, all tags --------------------------------------------------


def test_list_tags_pages_with_n_and_link(reg: tuple[LocalRegistry, dict]) -> None:
    registry, _ = reg
    with RegistryClient(registry.host, PLAIN) as client:
        whole = client.list_tags("apps/many")
        paged = client.list_tags("apps/many", page_size=7)
        catalog = client.catalog(page_size=5)
    assert sorted(whole) == sorted(MANY_TAGS)  # the digest-only manifest has no tag
    assert paged == whole
    assert catalog == sorted(CATALOG + ["apps/many", "multi/arch"])


def test_catalog_pages_follow_the_link_header(reg: tuple[LocalRegistry, dict]) -> None:
    registry, _ = reg
    first = httpx.get(f"{registry.url}/v2/_catalog?n=5")
    assert 'rel="next"' in first.headers["Link"]  # the registry pages: the walk follows it
    assert first.json()["repositories"] == sorted(CATALOG + ["apps/many", "multi/arch"])[:5]


def test_all_tags_cli_lists_every_tag(reg: tuple[LocalRegistry, dict]) -> None:
    registry, _ = reg
    result = run_cli("list-tags", f"{registry.host}/apps/many", "--src-tls-verify", "false")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted(MANY_TAGS)  # in the order served
    result = run_cli("list-tags", f"{registry.host}/apps/many", "--json",
                     "--src-tls-verify", "false")
    assert json.loads(result.stdout) == {"repository": f"{registry.host}/apps/many",
                                         "tags": lines}


def test_list_tags_of_a_missing_repository_is_one_error_line(
        reg: tuple[LocalRegistry, dict]) -> None:
    registry, _ = reg
    result = run_cli("list-tags", f"{registry.host}/no/such", "--src-tls-verify", "false")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "no/such" in result.stderr
    assert "Traceback" not in result.output


# -- 2. tag filters -----------------------------------------------------------------------


def test_semver_range_leaves_out_prereleases_and_non_semver(
        reg: tuple[LocalRegistry, dict]) -> None:
    host = reg[0].host
    assert sorted(resolved(host, TagFilter.build(semver=">=1.2.0 <2"))) == [
        "1.10.0", "1.11.0", "1.2.0", "1.2.1", "1.2.10", "1.2.2", "1.3.0", "1.4.0",
        "v1.5.0", "v1.6.0"]


def test_semver_range_naming_a_prerelease_takes_that_versions_prereleases(
        reg: tuple[LocalRegistry, dict]) -> None:
    host = reg[0].host
    assert sorted(resolved(host, TagFilter.build(semver=">=2.0.0-beta.0 <3"))) == [
        "2.0.0", "2.0.0-rc.1", "2.1.0", "2.10.0", "v2.2.0", "v2.3.0"]


def test_semver_then_latest_gives_the_highest_first(reg: tuple[LocalRegistry, dict]) -> None:
    host = reg[0].host
    assert resolved(host, TagFilter.build(semver=">=1.2.0 <2", latest=5)) == [
        "1.11.0", "1.10.0", "v1.6.0", "v1.5.0", "1.4.0"]
    assert resolved(host, TagFilter.build(latest=3)) == ["4.4.0", "4.3.0", "4.2.0"]


def test_include_then_exclude_match_whole_tags(reg: tuple[LocalRegistry, dict]) -> None:
    host = reg[0].host
    assert sorted(resolved(host, TagFilter.build(include=[r"1\.2\..*"],
                                                 exclude=[".*-.*"]))) == [
        "1.2.0", "1.2.1", "1.2.10", "1.2.2", "1.2.3.4"]
    assert sorted(resolved(host, TagFilter.build(include=["build-00.", "latest"]))) == [
        f"build-00{i}" for i in range(1, 10)] + ["latest"]


def test_latest_without_semver_ranks_non_semver_tags_naturally() -> None:
    tags = ["build-9", "build-10", "edge", "build-2"]
    assert TagFilter.build(latest=3).apply(tags) == ["edge", "build-10", "build-9"]


# -- 3. catalogs --------------------------------------------------------------------------


def test_all_repositories_with_include_and_exclude(reg: tuple[LocalRegistry, dict]) -> None:
    host = reg[0].host
    image_set = cli_image_set([host], all_repositories=True,
                              include_repositories=["team-a/.*", "tools/t[0-3]"],
                              exclude_repositories=["team-a/svc-1."],
                              tags=TagFilter.build(semver="^1"))
    resolution = resolve_image_set(image_set, options=PLAIN)
    want = [f"team-a/svc-{i:02d}" for i in range(10)] + [f"tools/t{i}" for i in range(4)]
    assert [str(r) for r in resolution.references] == [
        f"{host}/{repo}:{tag}" for repo in want for tag in ("1.0.0", "1.1.0")]
    assert resolution.repositories == 14
    assert resolution.tags_listed == 42


def test_a_registry_without_catalog_gets_a_clear_error(
        reg: tuple[LocalRegistry, dict], fault_proxy) -> None:
    proxy = fault_proxy(reg[0].url)
    proxy.status(r"^/v2/_catalog", 404, times=None,
                 body=b'{"errors":[{"code":"NOT_FOUND","message":"not found"}]}')
    with pytest.raises(CatalogError) as caught:
        resolve_image_set(cli_image_set([proxy.host], all_repositories=True), options=PLAIN)
    assert str(caught.value) == (
        f"{proxy.host} does not serve the catalog (GET /v2/_catalog answered 404); name its "
        "repositories instead (Docker Hub and GHCR serve no catalog)")
    result = run_cli("export", proxy.host, "--all-repositories", "-o", "/nonexistent/b",
                     "--src-tls-verify", "false")
    assert result.exit_code == 1
    assert result.stderr == f"error: {caught.value}\n"


# -- 6. dry run, export, vanished tags ----------------------------------------------------


def test_dry_run_json_names_entry_and_filter(reg: tuple[LocalRegistry, dict],
                                             tmp_path: Path) -> None:
    host = reg[0].host
    result = run_cli("export", f"{host}/apps/many", "--semver", ">=4.3", "-o",
                     str(tmp_path / "b"), "--dry-run", "--json", "--src-tls-verify", "false")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["selection"] == {
        "selected": [{"reference": f"{host}/apps/many:{t}", "entry": "command line",
                      "selectedBy": "--semver '>=4.3'", "listed": True}
                     for t in ("4.3.0", "4.4.0")],
        "blocked": [], "repositories": 1, "tagsListed": 70}
    assert [i["reference"] for i in doc["images"]] == [f"{host}/apps/many:4.3.0",
                                                       f"{host}/apps/many:4.4.0"]
    assert not (tmp_path / "b").exists()


def test_export_of_a_filtered_repository_writes_exactly_those_tags(
        reg: tuple[LocalRegistry, dict], tmp_path: Path) -> None:
    host = reg[0].host
    result = run_cli("export", f"{host}/apps/many", "--include-tags", "0\\..*",
                     "--latest", "2", "-o", str(tmp_path / "b"), "-q",
                     "--src-tls-verify", "false")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "b" / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == [f"{host}/apps/many:0.9.0", f"{host}/apps/many:0.8.0"]
    digests = reg[1]["digests"]
    assert [m["digest"] for m in index["manifests"]] == [digests["0.9.0"], digests["0.8.0"]]


def test_a_tag_that_vanishes_after_listing_is_skipped(
        reg: tuple[LocalRegistry, dict], fault_proxy, tmp_path: Path) -> None:
    proxy = fault_proxy(reg[0].url)
    proxy.status(r"^/v2/apps/many/manifests/4\.3\.0$", 404, times=None,
                 body=b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}')
    result = run_cli("export", f"{proxy.host}/apps/many", "--semver", ">=4.2", "-o",
                     str(tmp_path / "b"), "-q", "--src-tls-verify", "false")
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"skipped: {proxy.host}/apps/many:4.3.0: listed, but the "
                             "registry no longer serves it\n")
    index = json.loads((tmp_path / "b" / "index.json").read_text())
    assert sorted(m["annotations"]["org.opencontainers.image.ref.name"]
                  for m in index["manifests"]) == [f"{proxy.host}/apps/many:4.2.0",
                                                   f"{proxy.host}/apps/many:4.4.0"]


def test_a_set_that_selects_nothing_fails_with_what_was_listed(
        reg: tuple[LocalRegistry, dict], tmp_path: Path) -> None:
    result = run_cli("export", f"{reg[0].host}/apps/many", "--semver", ">=9", "-o",
                     str(tmp_path / "b"), "--src-tls-verify", "false")
    assert result.exit_code == 1
    assert result.stderr == ("error: the image set selected no images (70 tags listed in 1 "
                             "repository); see --dry-run\n")


def test_mirror_of_an_image_set(reg: tuple[LocalRegistry, dict], registry: LocalRegistry) -> None:
    src = reg[0].host
    result = run_cli("mirror", f"{src}/apps/many", "--semver", "^4.3", "--to",
                     f"{registry.host}/m", "-q", "--src-tls-verify", "false",
                     "--dest-tls-verify", "false")
    assert result.exit_code == 0, result.output
    tags = httpx.get(f"{registry.url}/v2/m/apps/many/tags/list").json()["tags"]
    assert sorted(tags) == ["4.3.0", "4.4.0"]


# -- inspect ------------------------------------------------------------------------------


def test_inspect_an_index_and_an_image(reg: tuple[LocalRegistry, dict]) -> None:
    registry, seeded = reg
    index, amd = seeded["index"], seeded["amd"]
    result = run_cli("inspect", f"{registry.host}/multi/arch:1", "--json",
                     "--src-tls-verify", "false")
    doc = json.loads(result.stdout)
    assert doc["digest"] == index.digest
    assert [p["platform"] for p in doc["platforms"]] == [
        "linux/amd64", "unknown/unknown", "linux/arm64/v8", "unknown/unknown"]
    assert [p["digest"] for p in doc["platforms"]] == [c.digest for c in index.children]
    result = run_cli("inspect", f"{registry.host}/multi/arch@{amd.digest}", "--json",
                     "--src-tls-verify", "false")
    doc = json.loads(result.stdout)
    assert (doc["architecture"], doc["os"], doc["digest"]) == ("amd64", "linux", amd.digest)
    assert doc["layers"] == [{"digest": b.digest, "mediaType": b.media_type, "size": b.size}
                             for b in amd.layers]
    raw = run_cli("inspect", f"{registry.host}/multi/arch:1", "--raw",
                  "--src-tls-verify", "false")
    assert raw.stdout_bytes == index.manifest_bytes
    config = run_cli("inspect", f"{registry.host}/multi/arch@{amd.digest}", "--raw",
                     "--config", "--src-tls-verify", "false")
    assert config.stdout_bytes == amd.config.data


def test_cli_image_set_refuses_a_tagged_argument() -> None:
    with pytest.raises(ValueError, match="give REGISTRY/REPOSITORY without a tag"):
        cli_image_set(["127.0.0.1:5000/app:1"], tags=TagFilter())
    assert ImageSet().entries == []


def test_a_registry_that_refuses_the_page_size_is_asked_without_it(
        reg: tuple[LocalRegistry, dict], fault_proxy) -> None:
    proxy = fault_proxy(reg[0].url)
    proxy.status(r"^/v2/_catalog\?n=1000$", 400, times=1, body=(
        b'{"errors":[{"code":"PAGINATION_NUMBER_INVALID","message":"invalid number"}]}'))
    with RegistryClient(proxy.host, PLAIN) as client:
        assert client.catalog() == sorted(CATALOG + ["apps/many", "multi/arch"])
    assert [p for m, p, _ in proxy.headers if "_catalog" in p] == [
        "/v2/_catalog?n=1000", "/v2/_catalog"]


def test_latest_orders_by_semver_precedence() -> None:
    # semver.org 2.0.0 section 11's example, highest first, with a v-tag and a non-semver
    tags = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
            "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "v0.9.0", "edge"]
    assert TagFilter.build(latest=10).apply(tags) == [
        "1.0.0", "1.0.0-rc.1", "1.0.0-beta.11", "1.0.0-beta.2", "1.0.0-beta",
        "1.0.0-alpha.beta", "1.0.0-alpha.1", "1.0.0-alpha", "v0.9.0", "edge"]


def test_inspect_a_layout_and_an_archive(reg: tuple[LocalRegistry, dict],
                                         tmp_path: Path) -> None:
    registry, seeded = reg
    index, amd = seeded["index"], seeded["amd"]
    host = registry.host
    refs = [f"{host}/multi/arch:1", f"{host}/multi/arch@{amd.digest}"]
    for out in ("b", "b.tar"):
        result = run_cli("export", *refs, "-o", str(tmp_path / out), "-q",
                         "--src-tls-verify", "false")
        assert result.exit_code == 0, result.output
    for transport, path in (("oci", tmp_path / "b"), ("oci-archive", tmp_path / "b.tar")):
        doc = json.loads(run_cli("inspect", f"{transport}:{path}:{refs[0]}", "--json").stdout)
        assert (doc["digest"], len(doc["platforms"])) == (index.digest, 4)
        doc = json.loads(run_cli("inspect", f"{transport}:{path}:{refs[1]}", "--json").stdout)
        assert (doc["architecture"], doc["digest"]) == ("amd64", amd.digest)
        config = run_cli("inspect", f"{transport}:{path}:{refs[1]}", "--raw", "--config")
        assert config.stdout_bytes == amd.config.data
        several = run_cli("inspect", f"{transport}:{path}")
        assert several.exit_code == 1
        assert "holds 2 images" in several.stderr
    bad = run_cli("inspect", "docker-archive:/x.tar")
    assert bad.exit_code == 2
    assert bad.stderr.endswith("docker-archive: cannot be inspected yet; expected "
                               "docker://REFERENCE, oci:DIR[:NAME] or "
                               "oci-archive:FILE[:NAME]\n")


def test_export_all_tags_writes_every_tag(reg: tuple[LocalRegistry, dict],
                                          tmp_path: Path) -> None:
    host = reg[0].host
    result = run_cli("export", f"{host}/team-a/svc-00", "--all-tags", "-o",
                     str(tmp_path / "b"), "-q", "--src-tls-verify", "false")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "b" / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in index["manifests"]] == [f"{host}/team-a/svc-00:{t}"
                                             for t in ("1.0.0", "1.1.0", "latest")]


def test_repository_filters_need_all_repositories(tmp_path: Path) -> None:
    result = run_cli("export", "127.0.0.1:1/app", "--include-repositories", "a.*", "-o",
                     str(tmp_path / "b"))
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: --include-repositories and --exclude-repositories "
                                  "go with --all-repositories\n")
