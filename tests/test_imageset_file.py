"""Image-set files (-c FILE): skopeo's sync YAML selects what skopeo sync selects, our
keys, per-registry TLS and credentials, and bad input (exit 2 before any request,
naming the option or FILE:LINE)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.engine.imageset import ImageSetError, read_image_set
from bundler.engine.selection import resolve_image_set
from bundler.sandbox import LocalRegistry, make_image, make_layer, push
from bundler.sandbox.imagesets import tag_many

UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: any request would exit 1


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def image(name: str) -> Any:
    return make_image([make_layer({f"{name}.txt": name.encode()})])


SKOPEO_YAML = """\
{a}:
    images:
        busybox: []
        redis:
            - "1.0"
            - "2.0"
            - "{redis_digest}"
    images-by-tag-regex:
        nginx: ^1\\.13\\.[12]-alpine-perl$
    credentials:
        username: john
        password: this is a secret
    tls-verify: true
    cert-dir: {cert_dir}
{b}:
    tls-verify: false
    images:
        coreos/etcd:
            - latest
"""


@pytest.fixture
def skopeo_registries(registry_factory: Callable[..., LocalRegistry], ca: Any
                      ) -> tuple[LocalRegistry, LocalRegistry, str]:
    """skopeo-sync(1)'s example on loopback: A = registry.example.com (TLS, john's
    password), B = quay.io (plain http). Returns (A, B, the untagged redis digest)."""
    a = registry_factory(tls=ca, htpasswd=("john", "this is a secret"))
    b = registry_factory()
    with a.client() as http:
        tag_many(a, "busybox", image("busybox"), ["1.36", "1.35", "latest", "musl"],
                 client=http)
        tag_many(a, "redis", image("redis"), ["1.0", "2.0", "3.0", "latest"], client=http)
        redis_digest = push(a, "redis", image("redis-untagged"), tag=None, client=http)
        tag_many(a, "nginx", image("nginx"), ["1.13.1-alpine-perl", "1.13.2-alpine-perl",
                                              "1.13.3-alpine-perl", "1.13.1-alpine",
                                              "x1.13.1-alpine-perl", "1.14.0-alpine-perl"],
                 client=http)
        tag_many(a, "other", image("other"), ["1.0"], client=http)
    tag_many(b, "coreos/etcd", image("etcd"), ["latest", "v3.5.0"])
    return a, b, redis_digest


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")
def test_skopeo_sync_yaml_selects_what_skopeo_sync_selects(
        skopeo_registries: tuple[LocalRegistry, LocalRegistry, str], tmp_path: Path) -> None:
    a, b, redis_digest = skopeo_registries
    config = tmp_path / "sync.yml"
    config.write_text(SKOPEO_YAML.format(a=a.host, b=b.host, redis_digest=redis_digest,
                                         cert_dir=a.cert_dir))
    out = tmp_path / "skopeo-out"
    out.mkdir()
    subprocess.run(["skopeo", "sync", "--src", "yaml", "--dest", "dir", "--scoped",
                    str(config), str(out)], check=True, capture_output=True, timeout=300)
    skopeo = sorted(str(p.relative_to(out)) for p in out.rglob("manifest.json"))
    skopeo = sorted(s.removesuffix("/manifest.json") for s in skopeo)

    ours = resolve_image_set(read_image_set(config))
    assert sorted(str(r) for r in ours.references) == skopeo == sorted([
        f"{a.host}/busybox:1.35", f"{a.host}/busybox:1.36", f"{a.host}/busybox:latest",
        f"{a.host}/busybox:musl", f"{a.host}/redis:1.0", f"{a.host}/redis:2.0",
        f"{a.host}/redis@{redis_digest}", f"{a.host}/nginx:1.13.1-alpine-perl",
        f"{a.host}/nginx:1.13.2-alpine-perl", f"{b.host}/coreos/etcd:latest"])


def test_export_dry_run_of_a_file_names_each_line(
        skopeo_registries: tuple[LocalRegistry, LocalRegistry, str], tmp_path: Path) -> None:
    a, b, _ = skopeo_registries
    config = tmp_path / "set.yaml"
    config.write_text(f"""\
{a.host}:
  cert-dir: {a.cert_dir}
  credentials: {{username: john, password: this is a secret}}
  images:
    nginx:
      tags: {{include: ['1\\.1[34]\\..*'], exclude: ['.*-alpine'], latest: 2}}
    busybox: []
  repositories:
    include: [oth.*]
    all-tags: true
{b.host}:
  tls-verify: false
  images-by-semver:
    coreos/etcd: ">= 3.0.0"
blocked:
  - 'busybox:(latest|musl)$'
""")
    result = run_cli("export", "-c", str(config), "-o", str(tmp_path / "b"), "--dry-run",
                     "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)["selection"]
    line = f"{config}:"
    filt = "--include-tags '1\\.1[34]\\..*' --exclude-tags '.*-alpine' --latest 2"
    assert [(s["reference"], s["entry"], s["selectedBy"]) for s in doc["selected"]] == [
        (f"{a.host}/nginx:1.14.0-alpine-perl", line + "5", filt),
        (f"{a.host}/nginx:1.13.3-alpine-perl", line + "5", filt),
        (f"{a.host}/busybox:1.35", line + "7", "all tags"),
        (f"{a.host}/busybox:1.36", line + "7", "all tags"),
        (f"{a.host}/other:1.0", line + "9", "all tags"),
        (f"{b.host}/coreos/etcd:v3.5.0", line + "14", "--semver '>= 3.0.0'"),
    ]
    assert [(s["reference"], s["blockedBy"]) for s in doc["blocked"]] == [
        (f"{a.host}/busybox:latest", "busybox:(latest|musl)$"),
        (f"{a.host}/busybox:musl", "busybox:(latest|musl)$")]
    text = run_cli("export", "-c", str(config), "-o", str(tmp_path / "b"), "--dry-run")
    assert text.stdout.splitlines()[:3] == [
        "image set: 6 references from 13 listed tags in 4 repositories; 2 blocked",
        f"  {a.host}/nginx:1.14.0-alpine-perl  [{line}5: {filt}]",
        f"  {a.host}/nginx:1.13.3-alpine-perl  [{line}5: {filt}]",
    ]


# -- bad input: exit 2 before any request --------------------------------------------------


def usage(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.endswith(f"\nError: {message}\n"), result.stderr


def test_bad_regex_and_range_on_the_command_line(tmp_path: Path) -> None:
    out = str(tmp_path / "b")
    usage(run_cli("export", f"{UNREACHABLE}/app", "--include-tags", "((", "-o", out),
          "--include-tags: invalid regex '((': missing ), unterminated subpattern at "
          "position 1")
    usage(run_cli("export", f"{UNREACHABLE}/app", "--semver", ">=1.2.0 <<2", "-o", out),
          "--semver: invalid semver range '>=1.2.0 <<2': Invalid comparator: <<2")
    usage(run_cli("mirror", UNREACHABLE, "--all-repositories", "--exclude-repositories",
                  "[", "--to", "127.0.0.1:2/m"),
          "--exclude-repositories: invalid regex '[': unterminated character set at "
          "position 0")
    usage(run_cli("export", f"{UNREACHABLE}/app:1", "--all-tags", "-o", out),
          f"invalid reference '{UNREACHABLE}/app:1': tag options select tags of a "
          "repository: give REGISTRY/REPOSITORY without a tag")
    usage(run_cli("export", f"{UNREACHABLE}/app", "--latest", "0", "-o", out),
          "Invalid value for '--latest': 0 is not in the range x>=1.")
    assert not (tmp_path / "b").exists()


def test_every_error_of_a_file_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"""\
{UNREACHABLE}:
  images:
    ok: []
    app:
      tags: {{include: ['(('], semver: '>=1 <<2', latest: 0, newest: 3}}
  image-by-tag-regex:
    nginx: x
  tls-verify: maybe
blocked: ['[']
not a host!: {{}}
""")
    result = run_cli("export", "-c", str(config), "-o", str(tmp_path / "b"))
    c = str(config)
    usage(result, "invalid image set:\n" + "\n".join([
        f"{c}:5: tags.include: invalid regex '((': missing ), unterminated subpattern at "
        "position 1",
        f"{c}:5: tags.semver: invalid semver range '>=1 <<2': Invalid comparator: <<2",
        f"{c}:5: tags.latest must be a whole number of 1 or more",
        f"{c}:5: unknown key 'newest' in tags of {UNREACHABLE}/app (known: exclude, "
        "include, latest, semver)",
        f"{c}:6: unknown key 'image-by-tag-regex' in registry '{UNREACHABLE}' (known: "
        "cert-dir, credentials, images, images-by-semver, images-by-tag-regex, "
        "repositories, tls-verify)",
        f"{c}:8: tls-verify must be true or false",
        f"{c}:9: a blocked regex: invalid regex '[': unterminated character set at "
        "position 0",
        f"{c}:10: 'not a host!' is not a registry host[:port] (or 'blocked')",
    ]))


def test_a_file_that_is_no_yaml_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("a.example:\n  images:\n    app: [1, 2\n  tls-verify: true\n")
    with pytest.raises(ImageSetError) as caught:
        read_image_set(config)
    assert caught.value.errors[0].startswith(f"{config}:4: not YAML: ")


def test_a_file_with_other_options_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "set.yaml"
    config.write_text(f"{UNREACHABLE}:\n  images:\n    app: []\n")
    usage(run_cli("export", "-c", str(config), "--all-tags", "-o", str(tmp_path / "b")),
          "-c/--config holds the whole image set: give no references, --images-file or "
          "selection options with it")
