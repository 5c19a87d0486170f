"""Break-it findings on image sets and serve: hostile and odd inputs from the docs'
promises (exit 2 before any request, nothing from outside printed raw, pagination that
ends, ranges as RFC 9110 says)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner, Result
from conftest import Served

from bundler.cli.main import main
from bundler.engine.imageset import read_image_set
from bundler.engine.selection import cli_image_set, resolve_image_set
from bundler.engine.tagfilter import TagFilter
from bundler.registry.client import TransportOptions
from bundler.sandbox import FaultProxy, LocalRegistry, SeededSet

PLAIN = TransportOptions(tls_verify=False, retries=0)
JSON = {"Content-Type": "application/json"}

UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: any request would exit 1


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def usage(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.endswith(f"\nError: {message}\n"), result.stderr


def test_an_empty_semver_range_is_a_usage_error_not_ignored(tmp_path: Path) -> None:
    # --semver '' used to count as no tag option: the argument became REPO:latest
    usage(run_cli("export", f"{UNREACHABLE}/app", "--semver", "", "-o", str(tmp_path / "b")),
          "--semver: '' is not a semver range like '>=1.2.0 <2'")
    usage(run_cli("mirror", f"{UNREACHABLE}/app", "--semver", " ", "--to", "127.0.0.1:2/m"),
          "--semver: ' ' is not a semver range like '>=1.2.0 <2'")


def test_platform_mode_single_without_a_platform_is_a_usage_error(tmp_path: Path) -> None:
    # docs/image-sets.md: "--platform-mode single with other than one platform" exits 2
    for extra in ([], ["--platform", "all"]):
        usage(run_cli("export", f"{UNREACHABLE}/multi/arch:1", "--platform-mode", "single",
                      *extra, "-o", str(tmp_path / "b")),
              "--platform-mode single keeps exactly one platform; give it with "
              "--platform OS/ARCH[/VARIANT]")
    assert not (tmp_path / "b").exists()


def test_yaml_integers_of_every_yaml_spelling_never_a_traceback(tmp_path: Path) -> None:
    # int("0x10") raised ValueError out of the checker: a traceback, exit 1
    config = tmp_path / "set.yaml"
    config.write_text(f"{UNREACHABLE}:\n  images:\n    app:\n      tags: {{latest: 0x10}}\n"
                      f"    web:\n      tags: {{latest: 1_000}}\n"
                      f"    api:\n      tags: {{latest: 0x0}}\n")
    result = run_cli("export", "-c", str(config), "-o", str(tmp_path / "b"), "--dry-run")
    usage(result, f"invalid image set:\n{config}:8: tags.latest must be a whole number of 1 "
                  "or more")
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"{UNREACHABLE}:\n  images:\n    app:\n      tags: {{latest: 0x10}}\n")
    assert read_image_set(ok).entries[0].tags.latest == 16  # type: ignore[union-attr]


def test_yaml_merge_keys_work_as_in_skopeo(tmp_path: Path) -> None:
    # skopeo's YAML parser resolves '<<: *anchor'; the checker refused the '<<' key
    config = tmp_path / "set.yaml"
    config.write_text(f"""\
{UNREACHABLE}:
  images:
    app: &common
      tags: {{semver: '>=1 <2', latest: 3}}
      platforms: [linux/amd64]
    web:
      <<: *common
      tags: {{latest: 1}}
    api: {{<<: [*common, {{all-tags: true}}]}}
""")
    entries = {e.repository: e for e in read_image_set(config).entries}
    assert entries["web"].tags.describe() == "--latest 1"  # type: ignore[union-attr]
    assert entries["api"].tags.describe() == "--semver '>=1 <2' --latest 3"  # type: ignore[union-attr]
    assert str(entries["web"].platforms) == str(entries["app"].platforms)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{UNREACHABLE}:\n  images:\n    app: {{<<: [1], all-tags: true}}\n")
    usage(run_cli("export", "-c", str(bad), "-o", str(tmp_path / "b")),
          f"invalid image set:\n{bad}:3: a merge key ('<<') takes a mapping or a list of "
          "mappings")


def test_a_deeply_nested_yaml_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text(f"{UNREACHABLE}:\n  images:\n    app: " + "[" * 20000 + "]" * 20000 + "\n")
    usage(run_cli("export", "-c", str(config), "-o", str(tmp_path / "b")),
          f"invalid image set:\n{config}: not an image set: nested too deeply")


def test_a_repository_without_a_value_takes_every_tag_as_in_skopeo(tmp_path: Path) -> None:
    # skopeo reads 'busybox:' (null) as an empty list: every tag
    config = tmp_path / "set.yaml"
    config.write_text(f"{UNREACHABLE}:\n  images:\n    busybox:\n    redis: ['1']\n")
    entries = read_image_set(config).entries
    assert [(e.repository, e.tags) for e in entries] == [("busybox", TagFilter()),
                                                        ("redis", None)]


def test_a_dry_run_of_an_image_set_whose_reader_stopped_reading_exits_0(
        seeded_registry: tuple[LocalRegistry, SeededSet], registry: LocalRegistry,
        tmp_path: Path) -> None:
    # `bundler export REPO --all-tags --dry-run | head -1`: the resolution's lines hit
    # EPIPE outside the guard of the plan's: exit 1 with nothing said
    reg, _ = seeded_registry
    for command in (["export", f"{reg.host}/apps/web", "--all-tags", "-o", str(tmp_path / "b")],
                    ["mirror", f"{reg.host}/apps/web", "--all-tags", "--to", f"{registry.host}/m"]):
        process = subprocess.Popen([sys.executable, "-m", "bundler", *command, "--dry-run"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # every write to stdout now fails with EPIPE
        err = process.stderr.read().decode()
        assert (process.wait(timeout=60), err) == (0, "")
    assert not (tmp_path / "b").exists()


def test_a_tags_list_whose_link_repeats_a_page_ends(
        seeded_registry: tuple[LocalRegistry, SeededSet],
        fault_proxy: Callable[..., FaultProxy]) -> None:
    # a registry whose Link header points back at a page already read: the listing
    # followed it forever (list-tags never ended; export hung resolving)
    reg, _ = seeded_registry
    proxy = fault_proxy(reg.url)
    proxy.status(r"/v2/apps/web/tags/list", 200,
                 {**JSON, "Link": '</v2/apps/web/tags/list?n=2&last=b>; rel="next"'},
                 json.dumps({"name": "apps/web", "tags": ["a", "b"]}).encode(), times=None)
    try:
        done = subprocess.run([sys.executable, "-m", "bundler", "list-tags",
                               f"{proxy.host}/apps/web"], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"list-tags never ended: {proxy.count('GET', 'tags/list')} "
                             "requests") from None
    assert (done.returncode, done.stdout, done.stderr) == (0, "a\nb\n", "")
    assert proxy.count("GET", "tags/list") == 2  # the repeated page shows nothing new


def test_catalog_names_outside_the_grammar_are_left_out_not_fatal(
        seeded_registry: tuple[LocalRegistry, SeededSet],
        fault_proxy: Callable[..., FaultProxy]) -> None:
    # a catalog naming 'evil\x1b[31m/x': the tags request of that name failed inside
    # httpx and the whole resolution ended with "error: ('HOST', 'evil\x1b[31m/x'):
    # Invalid non-printable ASCII character in URL"
    reg, _ = seeded_registry
    proxy = fault_proxy(reg.url)
    names = ["apps/web", "evil\x1b[31m/x", "ok/\u202erepo", "Upper/x", "a//b", "../base/os"]
    proxy.status(r"/v2/_catalog", 200, JSON, json.dumps({"repositories": names}).encode(),
                 times=None)
    image_set = cli_image_set([proxy.host], all_repositories=True)
    resolution = resolve_image_set(image_set, options=PLAIN)
    assert [r.repository for r in resolution.references] == ["apps/web"] * 3
    assert resolution.repositories == 1


def test_serve_ranges_an_unknown_unit_and_an_empty_suffix(
        seeded_registry: tuple[LocalRegistry, SeededSet], seeded_bundles: dict[str, Path],
        serve: Callable[..., Served]) -> None:
    # RFC 9110 §14.2: a Range of a unit the server does not know MUST be ignored (it was
    # 416); §14.1.1: a suffix range is satisfiable only with a nonzero length
    # (bytes=-0 was 206 with the whole blob)
    _, seeded = seeded_registry
    served = serve(seeded_bundles["dir"], "-q")
    blob = max(seeded.get("apps/web", "1.0").item.blobs, key=lambda b: b.size)
    url = f"{served.url}/v2/apps/web/blobs/{blob.digest}"
    whole = httpx.get(url, headers={"Range": "items=0-1"})
    assert (whole.status_code, whole.content) == (200, blob.data)
    assert "Content-Range" not in whole.headers
    empty = httpx.get(url, headers={"Range": "bytes=-0"})
    assert empty.status_code == 416
    assert empty.headers["Content-Range"] == f"bytes */{blob.size}"
    one = httpx.get(url, headers={"Range": "bytes=-1"})
    assert (one.status_code, one.content) == (206, blob.data[-1:])


def test_a_catastrophic_regex_is_bounded_and_named(registry: LocalRegistry,
                                                   tmp_path: Path) -> None:
    # Python's re backtracked without end on '(a|a)+' against a 42-character tag, deaf
    # to Ctrl-C: export --include-tags never ended
    from bundler.sandbox import make_image, make_layer
    from bundler.sandbox.imagesets import tag_many
    tag = "a" * 40 + "-x"
    tag_many(registry, "apps/redos", make_image([make_layer({"f": b"x"})]), [tag, "ok"])
    config = tmp_path / "set.yaml"
    config.write_text(f"{registry.host}:\n  images:\n    apps/redos: {{all-tags: true}}\n"
                      "blocked: ['(a|a)+x$']\n")
    runs = {"--include-tags": ["export", f"{registry.host}/apps/redos", "--include-tags",
                               "(a|a)+"],
            "a blocked regex": ["export", "-c", str(config)]}
    for what, command in runs.items():
        try:
            done = subprocess.run([sys.executable, "-m", "bundler", *command, "-o",
                                   str(tmp_path / "b"), "--dry-run"],
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{what}: the regex was never bounded") from None
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(f"error: {what}: regex "), done.stderr
        assert "backtracks without end" in done.stderr
    # patterns that only look dangerous answer at once, as before
    image_set = cli_image_set([f"{registry.host}/apps/redos"],
                              tags=TagFilter.build(include=[r"(a+)+-x", r"(\w+\d*)+"]))
    assert [r.tag for r in resolve_image_set(image_set, options=PLAIN).references] == \
        [tag, "ok"]


def test_a_dry_run_with_platforms_plans_the_narrowed_index(
        seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path) -> None:
    # --dry-run ignored --platform: it planned the whole index (its registry digest, every
    # platform's blobs), and said "would export" for a platform the index lacks
    from bundler.engine.platform_export import export_platforms
    from bundler.oci.platforms import PlatformChoice, parse_platform
    reg, seeded = seeded_registry
    ref = seeded.get("multi/arch", "1").reference
    for mode in ("strip", "single"):
        result = run_cli("export", ref, "--platform", "linux/arm64", "--platform-mode", mode,
                         "-o", str(tmp_path / mode), "--dry-run", "--json")
        assert result.exit_code == 0, result.output
        plan = json.loads(result.stdout)
        changed: list = []
        export_platforms([ref], tmp_path / f"real-{mode}",
                         PlatformChoice((parse_platform("linux/arm64"),), mode),
                         changed=changed)
        assert [i["digest"] for i in plan["images"]] == [str(changed[0].digest)]
        whole = run_cli("export", ref, "-o", str(tmp_path / "whole"), "--dry-run", "--json")
        assert plan["blobBytes"] < json.loads(whole.stdout)["blobBytes"]  # no amd64 layer
    result = run_cli("export", ref, "--platform", "windows/amd64", "-o",
                     str(tmp_path / "w"), "--dry-run")
    assert result.exit_code == 1
    assert "has no manifest for windows/amd64" in result.stderr


def test_a_repository_that_cannot_be_listed_is_named_without_a_python_tuple(
        seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path) -> None:
    # the error line began "error: ('127.0.0.1:PORT', 'no/such'): tags of ..."
    reg, _ = seeded_registry
    result = run_cli("export", f"{reg.host}/no/such", "--all-tags", "-o", str(tmp_path / "b"),
                     "--dry-run")
    assert result.exit_code == 1
    assert result.stderr == (f"error: tags of {reg.host}/no/such: {reg.host} answered HTTP "
                             "404 NAME_UNKNOWN: repository name not known to registry\n")


def test_a_dry_run_skips_a_vanished_tag_as_the_transfer_does(
        seeded_registry: tuple[LocalRegistry, SeededSet], registry: LocalRegistry,
        fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    # the export skips a listed tag gone by the transfer (exit 0, one "skipped:" line);
    # its dry run failed on it instead (exit 1), and so did mirror's
    reg, _ = seeded_registry
    proxy = fault_proxy(reg.url)
    proxy.status(r"/v2/apps/web/tags/list", 200, JSON,
                 json.dumps({"name": "apps/web", "tags": ["1.0", "ghost"]}).encode(),
                 times=None)
    skipped = (f"skipped: {proxy.host}/apps/web:ghost: listed, but the registry no longer "
               "serves it\n")
    for command in (["export", "-o", str(tmp_path / "b")],
                    ["mirror", "--to", f"{registry.host}/m"]):
        result = run_cli(command[0], f"{proxy.host}/apps/web", "--all-tags", *command[1:],
                         "--dry-run", "--json")
        assert (result.exit_code, result.stderr) == (0, skipped), result.output
        plan = json.loads(result.stdout)
        assert [i["reference"] for i in plan["images"]] == [f"{proxy.host}/apps/web:1.0"]
    assert not (tmp_path / "b").exists()


def test_docker_hub_repositories_of_a_file_get_library_as_on_the_command_line(
        tmp_path: Path) -> None:
    # skopeo-sync(1)'s own example, 'docker.io: images: busybox: []', listed
    # /v2/busybox/tags/list (Docker Hub serves library/busybox) and named the images
    # docker.io/busybox:TAG, where the command line gives docker.io/library/busybox
    config = tmp_path / "set.yaml"
    config.write_text("docker.io:\n  images:\n    busybox: []\n    alpine: ['3.20']\n"
                      "  images-by-semver:\n    team/app: '>=1'\n")
    entries = read_image_set(config).entries
    assert [e.repository for e in entries] == ["library/busybox", "library/alpine", "team/app"]
    assert [e.repository for e in cli_image_set(["docker.io/busybox"]).entries] == \
        ["library/busybox"]


def test_serve_counts_one_image_and_one_repository_in_the_singular(
        seeded_registry: tuple[LocalRegistry, SeededSet], serve: Callable[..., Served],
        tmp_path: Path) -> None:
    # "serving 1 images in 1 repositories from 1 bundle"
    from bundler import export_bundle
    _, seeded = seeded_registry
    export_bundle([seeded.get("base/os", "1").reference], tmp_path / "one")
    served = serve(tmp_path / "one", "-q")
    assert "serving 1 image in 1 repository from 1 bundle on " in served.stderr


def test_mirror_help_says_what_its_arguments_are_with_the_selection_options() -> None:
    # export --help said REFERENCES become REGISTRY/REPOSITORY or REGISTRY with the
    # selection options; mirror --help, with the same options, said nothing of it
    text = " ".join(run_cli("mirror", "--help").stdout.split())
    assert "with --all-tags or a tag filter, REGISTRY/REPOSITORY; with " \
           "--all-repositories, REGISTRY" in text
    assert "bundler mirror -c imageset.yaml" in text


def test_a_cert_dir_of_a_file_that_is_no_directory_is_refused_with_its_line(
        tmp_path: Path) -> None:
    # --src-cert-dir that is no directory exits 2; the file's cert-dir was taken as it was
    config = tmp_path / "set.yaml"
    config.write_text(f"{UNREACHABLE}:\n  images:\n    app: [latest]\n"
                      f"  cert-dir: {tmp_path / 'nope'}\n")
    usage(run_cli("export", "-c", str(config), "-o", str(tmp_path / "b")),
          f"invalid image set:\n{config}:4: cert-dir '{tmp_path / 'nope'}' is no directory")


def test_a_link_header_that_is_no_url_or_leaves_the_registry_is_one_error_line(
        seeded_registry: tuple[LocalRegistry, SeededSet],
        fault_proxy: Callable[..., FaultProxy]) -> None:
    # httpx.InvalidURL out of the Link header's URL was a traceback; a Link to another
    # host was followed there
    reg, _ = seeded_registry
    cases = {'<http://[::1>; rel="next"': "no URL: 'http://[::1'",
             '<\x1b[31m>; rel="next"': "no URL: '\\x1b[31m'",
             '<http://127.0.0.1:1/v2/apps/web/tags/list?n=2&last=b>; rel="next"':
                 "another host: 'http://127.0.0.1:1/v2/apps/web/tags/list?n=2&last=b'"}
    for link, said in cases.items():
        proxy = fault_proxy(reg.url)
        proxy.status(r"/v2/apps/web/tags/list", 200, {**JSON, "Link": link},
                     json.dumps({"name": "apps/web", "tags": ["a", "b"]}).encode(), times=None)
        done = subprocess.run([sys.executable, "-m", "bundler", "list-tags",
                               f"{proxy.host}/apps/web"], capture_output=True, text=True,
                              timeout=60)
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert done.stderr == (f"error: tags of {proxy.host}/apps/web: the Link header of "
                               f"the page names {said}\n")


def test_a_tags_list_body_that_is_no_json_object_is_one_error_line(
        seeded_registry: tuple[LocalRegistry, SeededSet],
        fault_proxy: Callable[..., FaultProxy]) -> None:
    # a body of [1,2], null or "x": AttributeError ('list' object has no attribute
    # 'get'); one nested 100000 deep: RecursionError; both tracebacks
    reg, _ = seeded_registry
    cases = {b"[1,2]": "JSON an array, not an object", b"null": "JSON null, not an object",
             b'"x"': "JSON a string, not an object",
             b'{"tags": ' + b"[" * 100000 + b"]" * 100000 + b"}": "JSON nested too deeply"}
    for body, said in cases.items():
        proxy = fault_proxy(reg.url)
        proxy.status(r"/v2/apps/web/tags/list", 200, JSON, body, times=None)
        result = run_cli("list-tags", f"{proxy.host}/apps/web")
        assert (result.exit_code, result.stdout) == (1, ""), result.output
        assert result.stderr == f"error: tags of {proxy.host}/apps/web: not a tags list ({said})\n"


def test_inspect_of_an_image_whose_config_is_json_nested_too_deeply(
        registry: LocalRegistry) -> None:
    # a registry may serve any config under its digest: json.loads raised RecursionError
    # (a traceback) in inspect; --config printed a non-JSON config as b'...'
    from bundler.sandbox import Image, make_layer, push
    from bundler.sandbox.images import Blob, canonical_json, sha256_digest
    config = Blob.of("application/vnd.oci.image.config.v1+json",
                     b"[" * 100000 + b"]" * 100000)
    layer = make_layer({"f": b"x"})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor(), "layers": [layer.descriptor()]}
    data = canonical_json(manifest)
    push(registry, "apps/deep", Image(data, manifest["mediaType"], sha256_digest(data),
                                      len(data), config, [layer], {}), tag="1")
    ref = f"{registry.host}/apps/deep:1"
    for extra in ([], ["--json"]):
        result = run_cli("inspect", ref, *extra)
        assert (result.exit_code, result.stderr) == (0, ""), result.output
        assert layer.digest in result.stdout
    result = run_cli("inspect", ref, "--config")
    assert result.exit_code == 0
    assert result.stdout == "[" * 100000 + "]" * 100000 + "\n"


def test_serve_names_the_bundle_and_image_of_a_manifest_that_does_not_parse(
        seeded_bundles: dict[str, Path], tmp_path: Path) -> None:
    # "error: manifest is JSON nested too deeply to be read": which of the bundles, and
    # which image, was not said
    import hashlib
    import shutil
    bundle = tmp_path / "bundle"
    shutil.copytree(seeded_bundles["dir"], bundle)
    raw = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
           b'"x":' + b"[" * 100000 + b"]" * 100000 + b"}")
    digest = hashlib.sha256(raw).hexdigest()
    (bundle / "blobs" / "sha256" / digest).write_bytes(raw)
    index = json.loads((bundle / "index.json").read_text())
    index["manifests"].append({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{digest}", "size": len(raw),
        "annotations": {"org.opencontainers.image.ref.name": "127.0.0.1:1/deep/img:1"}})
    (bundle / "index.json").write_text(json.dumps(index))
    done = subprocess.run([sys.executable, "-m", "bundler", "serve", str(bundle), "--listen",
                           "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (
        1, f"error: {bundle}: image deep/img:1: manifest is JSON nested too deeply to be "
           "read\n")


def test_a_name_or_tag_ending_in_a_newline_is_no_reference(
        seeded_registry: tuple[LocalRegistry, SeededSet],
        fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    # the grammar regexes were matched with '$', which matches before a final newline:
    # 'apps/web\n' was a repository (export went on to an httpx InvalidURL, exit 1) and
    # a listed tag 'latest\n' was selected
    usage(run_cli("export", f"{UNREACHABLE}/apps/web\n:1.0", "-o", str(tmp_path / "b")),
          f"invalid reference '{UNREACHABLE}/apps/web\\n:1.0': 'web\\n' is not a valid "
          "repository path component")
    config = tmp_path / "set.yaml"
    config.write_text(f'{UNREACHABLE}:\n  images:\n    app: ["1.0\\n"]\n')
    usage(run_cli("export", "-c", str(config), "-o", str(tmp_path / "b")),
          f"invalid image set:\n{config}:3: '1.0\\n' is not a tag or digest: invalid "
          f"reference '{UNREACHABLE}/app:1.0\\n': tag '1.0\\n' is not a valid tag")
    reg, _ = seeded_registry
    proxy = fault_proxy(reg.url)
    proxy.status(r"/v2/_catalog", 200, JSON,
                 json.dumps({"repositories": ["apps/web", "apps/web\n"]}).encode(), times=None)
    proxy.status(r"/v2/apps/web/tags/list", 200, JSON,
                 json.dumps({"name": "apps/web", "tags": ["1.0", "1.0\n"]}).encode(),
                 times=None)
    resolution = resolve_image_set(cli_image_set([proxy.host], all_repositories=True),
                                   options=PLAIN)
    assert [str(r) for r in resolution.references] == [f"{proxy.host}/apps/web:1.0"]


def test_serve_listen_with_a_host_or_port_that_is_no_address_is_a_usage_error() -> None:
    # '127.0.0.1:²' passed str.isdigit and int() raised (a traceback); 'bad host:1' got
    # to the listening socket: "error: cannot listen on bad host:1: Unknown error -2"
    for value, shown in (("127.0.0.1:²", "'127.0.0.1:²'"), ("bad host:1", "'bad host:1'"),
                         ("127.0.0.1\n:0", "'127.0.0.1\\n:0'")):
        result = run_cli("serve", "/nonexistent", "--listen", value)
        assert result.exit_code == 2, result.output
        assert result.stderr.endswith(f"Error: Invalid value for '--listen': expected "
                                      f"HOST:PORT (e.g. 127.0.0.1:5000), got {shown}\n")


def test_tags_of_other_unicode_digits_neither_crash_latest_nor_serve(
        seeded_registry: tuple[LocalRegistry, SeededSet], seeded_bundles: dict[str, Path],
        fault_proxy: Callable[..., FaultProxy], serve: Callable[..., Served]) -> None:
    # str.isdigit is true of '²', which int() refuses: --latest over a listed tag '1²'
    # failed the resolution with a ValueError, and serve answered ?n=² with 500
    assert TagFilter.build(latest=3).apply(["1²", "2", "v10", "v9"]) == ["v10", "v9", "2"]
    reg, _ = seeded_registry
    proxy = fault_proxy(reg.url)
    proxy.status(r"/v2/apps/web/tags/list", 200, JSON,
                 json.dumps({"name": "apps/web", "tags": ["1.0", "1²", "x" * 200]}).encode(),
                 times=None)
    image_set = cli_image_set([f"{proxy.host}/apps/web"], tags=TagFilter.build(latest=5))
    resolution = resolve_image_set(image_set, options=PLAIN)
    assert [r.tag for r in resolution.references] == ["1.0"]
    assert resolution.tags_listed == 3
    served = serve(seeded_bundles["dir"], "-q")
    for path in ("/v2/_catalog?n=%C2%B2", "/v2/apps/web/tags/list?n=%C2%B2"):
        response = httpx.get(served.url + path)
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_a_posix_class_regex_prints_no_python_warning(
        seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path) -> None:
    # re.compile('[[:digit:]]+') printed "tagfilter.py:NN: FutureWarning: Possible nested
    # set at position 1" and the source line; the class matches as in Go (skopeo)
    reg, _ = seeded_registry
    done = subprocess.run([sys.executable, "-m", "bundler", "export", f"{reg.host}/base/os",
                           "--include-tags", "[[:digit:]]+", "-o", str(tmp_path / "b"),
                           "--dry-run", "--json"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    selected = json.loads(done.stdout)["selection"]["selected"]
    assert [s["reference"] for s in selected] == [f"{reg.host}/base/os:1", f"{reg.host}/base/os:2"]


def test_ctrl_c_while_a_registry_stalls_the_listing_exits_130_at_once(
        seeded_registry: tuple[LocalRegistry, SeededSet],
        fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    # export --all-tags: Ctrl-C waited for the stalled listing threads (the command hung);
    # list-tags: click's "Aborted!" and exit 1 instead of the documented 130
    import signal
    import time
    reg, _ = seeded_registry
    proxy = fault_proxy(reg.url)
    proxy.add_rule("stall", r"/tags/list", method="GET", times=None, nbytes=0, seconds=60)
    runs = {"list-tags": (["list-tags", f"{proxy.host}/apps/web"], "interrupted\n"),
            "export": (["export", f"{proxy.host}/apps/web", "--all-tags", "-o",
                        str(tmp_path / "b"), "--dry-run"], "interrupted: nothing was moved\n")}
    for name, (command, said) in runs.items():
        process = subprocess.Popen([sys.executable, "-m", "bundler", *command],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while proxy.count("GET", "tags/list") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError(f"{name}: Ctrl-C did not end it") from None
        assert (process.returncode, err) == (130, said), name
        proxy.requests.clear()
