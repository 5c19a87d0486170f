"""End-to-end tests of importing differential bundles (``export --since``) on real
registries: the check before the first push, ``--base``, the registry receipt, the dry
run, a diff of a diff, a pipe.

The source changes between the exports: the base holds ``apps/a:1`` and ``apps/b:1``;
then ``apps/a:2`` (base layers plus a new one), ``apps/b:1`` moved to a new image, and
``apps/c:1`` (a new repository made of base layers only, with its own config) are
pushed and the diff is exported; then ``apps/a:3`` and the diff of the diff.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.sandbox import LocalRegistry, start_registry
from bundler.sandbox.images import make_image, random_layer
from bundler.sandbox.push import push

ACCEPT = ("application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.oci.image.index.v1+json")
RECEIPT_TYPE = "application/vnd.dev.bundler.receipt.v1+json"
L0, L1, L2 = random_layer(101, 6000), random_layer(102, 5000), random_layer(103, 4000)
L3, L4, L5 = random_layer(104, 3000), random_layer(105, 3000), random_layer(106, 2000)
A1 = make_image([L0, L1])
B1_OLD = make_image([L0, L2])
A2 = make_image([L0, L1, L3])
B1 = make_image([L0, L2, L4])
C1 = make_image([L0, L1], created="2026-02-02T00:00:00Z")
A3 = make_image([L0, L1, L3, L5])


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def bundle_id(bundle: Path) -> str:
    return json.loads((bundle / "bundler-receipt.json").read_bytes())["bundleId"]


@dataclass
class Chain:
    """The source and the bundles exported from it (read-only)."""

    src: LocalRegistry
    base: Path
    diff: Path
    diff_tar: Path
    diff_zst: Path
    diff2: Path
    refs: dict[str, str]  # apps/x:tag -> full source reference

    def images(self, *names: str) -> list[str]:
        return [self.refs[n] for n in names]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("differential")
    src = start_registry(root / "src")
    try:
        refs = {n: f"{src.host}/{n}" for n in
                ("apps/a:1", "apps/a:2", "apps/a:3", "apps/b:1", "apps/c:1")}
        push(src, "apps/a", A1, tag="1")
        push(src, "apps/b", B1_OLD, tag="1")
        base = root / "base"
        assert cli("export", refs["apps/a:1"], refs["apps/b:1"], "-o", str(base),
                   "-q").exit_code == 0
        push(src, "apps/a", A2, tag="2")
        push(src, "apps/b", B1, tag="1")  # the tag moves
        push(src, "apps/c", C1, tag="1")
        new = [refs[n] for n in ("apps/a:1", "apps/a:2", "apps/b:1", "apps/c:1")]
        diff, diff_tar, diff_zst = root / "diff", root / "diff.tar", root / "diff.tar.zst"
        for out in (diff, diff_tar, diff_zst):
            done = cli("export", *new, "-o", str(out), "--since", str(base), "-q")
            assert done.exit_code == 0, done.output
        push(src, "apps/a", A3, tag="3")
        diff2 = root / "diff2"
        done = cli("export", *new, refs["apps/a:3"], "-o", str(diff2), "--since", str(diff),
                   "-q")
        assert done.exit_code == 0, done.output
        yield Chain(src, base, diff, diff_tar, diff_zst, diff2, refs)
    finally:
        src.stop()


def digest_at(reg: LocalRegistry, repository: str, tag: str) -> str | None:
    with httpx.Client() as http:
        answer = http.head(f"{reg.url}/v2/{repository}/manifests/{tag}",
                           headers={"Accept": ACCEPT})
    return answer.headers["Docker-Content-Digest"] if answer.status_code == 200 else None


def catalog(reg: LocalRegistry) -> list[str]:
    with httpx.Client() as http:
        return http.get(f"{reg.url}/v2/_catalog").json()["repositories"] or []


def registry_receipt(reg: LocalRegistry, repository: str, bundle: str) -> tuple[dict, bytes]:
    """The registry receipt's manifest and its layer's bytes."""
    tag = "sha256-" + bundle.split(":", 1)[1]
    with httpx.Client() as http:
        answer = http.get(f"{reg.url}/v2/{repository}/manifests/{tag}",
                          headers={"Accept": ACCEPT})
        assert answer.status_code == 200, (repository, tag)
        manifest = answer.json()
        layer = manifest["layers"][0]["digest"]
        data = http.get(f"{reg.url}/v2/{repository}/blobs/{layer}").content
    return manifest, data


def with_base(chain: Chain, reg: LocalRegistry) -> None:
    done = cli("import", str(chain.base), "--to", f"{reg.host}/mirror", "-q")
    assert done.exit_code == 0, done.output


def assert_new_set(reg: LocalRegistry, prefix: str = "mirror") -> None:
    """Every image of the new set is in ``reg`` with the source's digest."""
    for repository, tag, image in (("apps/a", "1", A1), ("apps/a", "2", A2),
                                   ("apps/b", "1", B1), ("apps/c", "1", C1)):
        assert digest_at(reg, f"{prefix}/{repository}", tag) == image.digest, repository


def blob_heads(reg: LocalRegistry, mark: int) -> Counter:
    return Counter(u for m, u in reg.requests(mark) if m == "HEAD" and "/blobs/" in u)


# -- the bundles -------------------------------------------------------------------------
def test_the_diff_holds_only_the_new_blobs(chain: Chain) -> None:
    held = {f"sha256:{p.name}" for p in (chain.diff / "blobs" / "sha256").iterdir()}
    manifests = {A1.digest, A2.digest, B1.digest, C1.digest}
    assert held - manifests == {L3.digest, L4.digest, A2.config.digest, B1.config.digest,
                                C1.config.digest}
    receipt = json.loads((chain.diff / "bundler-receipt.json").read_bytes())
    assert receipt["base"]["bundleId"] == bundle_id(chain.base)
    assert [b["digest"] for b in receipt["omitted"]] == sorted(
        [L0.digest, L1.digest, L2.digest, A1.config.digest])


# -- into the destination that has the base ----------------------------------------------
def test_diff_into_the_destination_of_its_base(chain: Chain, registry_factory: Any) -> None:
    reg = registry_factory()
    with_base(chain, reg)
    imported_on = registry_receipt(reg, "mirror/bundler-receipts", bundle_id(chain.base))[0][
        "annotations"]["org.opencontainers.image.created"]
    mark = reg.mark()
    done = cli("import", str(chain.diff), "--to", f"{reg.host}/mirror", "-q")
    assert done.exit_code == 0, done.output
    assert_new_set(reg)
    lines = done.stdout.splitlines()
    # uploaded: L3, L4 and three configs; mounted: L0 and L1 into the new apps/c (from
    # apps/a, whose a:1 is complete); present: L0, L1 in apps/a, L0, L2 in apps/b
    assert re.fullmatch(r"imported 4 images \(1 already there\); blobs uploaded 5 "
                        r"\([^)]*\), mounted 2, already present 4; .*", lines[0])
    assert f"base {bundle_id(chain.base)} was imported on {imported_on} (receipt " \
           f"{reg.host}/mirror/bundler-receipts:sha256-" \
           f"{bundle_id(chain.base).split(':')[1]})" in lines
    assert "omitted blobs: 4 (2 present, 2 mountable, 0 from --base, 0 missing)" in lines
    tag = "sha256-" + bundle_id(chain.diff).split(":")[1]
    assert lines[-1] == f"receipt: {reg.host}/mirror/bundler-receipts:{tag}"
    manifest, data = registry_receipt(reg, "mirror/bundler-receipts", bundle_id(chain.diff))
    assert data == (chain.diff / "bundler-receipt.json").read_bytes()
    assert manifest["artifactType"] == RECEIPT_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert manifest["layers"][0]["mediaType"] == RECEIPT_TYPE
    # each blob is asked about once at most, and nothing in apps/c (new to the registry)
    heads = blob_heads(reg, mark)
    assert max(heads.values()) == 1
    assert not [u for u in heads if u.startswith("/v2/mirror/apps/c/")]
    mounts = [u for m, u in reg.requests(mark) if m == "POST" and "mount=" in u]
    assert sorted(re.search(r"mount=([^&]+)", u).group(1).replace("%3A", ":")
                  for u in mounts) == sorted([L0.digest, L1.digest])
    assert all("from=mirror%2Fapps%2Fa" in u or "from=mirror/apps/a" in u for u in mounts)


def test_diff_of_a_diff(chain: Chain, registry_factory: Any) -> None:
    reg = registry_factory()
    with_base(chain, reg)
    assert cli("import", str(chain.diff), "--to", f"{reg.host}/mirror", "-q").exit_code == 0
    done = cli("import", str(chain.diff2), "--to", f"{reg.host}/mirror", "-q")
    assert done.exit_code == 0, done.output
    assert_new_set(reg)
    assert digest_at(reg, "mirror/apps/a", "3") == A3.digest
    assert f"base {bundle_id(chain.diff)} was imported on " in done.stdout
    # with only the first base in, what only the first diff held is missing: L3, L4 and
    # the configs of a:2, b:1 and c:1 (L0 and L1 are mountable from apps/a)
    other = registry_factory()
    with_base(chain, other)
    mark = other.mark()
    refused = cli("import", str(chain.diff2), "--to", f"{other.host}/mirror", "-q")
    assert refused.exit_code == 1
    assert f"differential bundle on base {bundle_id(chain.diff)}: 5 omitted blobs are in " \
           "no destination repository" in refused.stderr
    missing = sorted([L3.digest, L4.digest, A2.config.digest, B1.config.digest,
                      C1.config.digest])
    assert [m.split(" ")[0] for m in re.findall(r"sha256:[0-9a-f]{64} \(\d+ bytes",
                                                 refused.stderr)] == missing
    assert f"{L3.digest} ({L3.size} bytes, needed by {chain.refs['apps/a:2']}, " \
           f"{chain.refs['apps/a:3']})" in refused.stderr
    assert digest_at(other, "mirror/apps/a", "3") is None
    assert {m for m, _ in other.requests(mark)} <= {"GET", "HEAD"}


# -- into an empty registry --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["diff", "diff_tar", "diff_zst"])
def test_refused_into_an_empty_registry(chain: Chain, registry_factory: Any,
                                        kind: str) -> None:
    reg = registry_factory()
    mark = reg.mark()
    done = cli("import", str(getattr(chain, kind)), "--to", f"{reg.host}/mirror", "-q")
    assert done.exit_code == 1
    base = bundle_id(chain.base)
    assert done.stderr.startswith(
        f"error: {getattr(chain, kind)}: differential bundle on base {base}: 4 omitted "
        "blobs are in no destination repository, mountable from none, and not in a base "
        "bundle: ")
    assert done.stderr.rstrip().endswith(
        f"nothing was pushed; import base {base} first, or give --base BUNDLE")
    l0 = f"{L0.digest} ({L0.size} bytes, needed by {chain.refs['apps/a:1']}, " \
         f"{chain.refs['apps/a:2']}, {chain.refs['apps/b:1']} and 1 more)"
    assert l0 in done.stderr
    for digest in (L1.digest, L2.digest, A1.config.digest):
        assert digest in done.stderr
    assert catalog(reg) == []
    assert {m for m, _ in reg.requests(mark)} <= {"GET", "HEAD"}


def test_with_base_into_an_empty_registry(chain: Chain, registry_factory: Any) -> None:
    reg = registry_factory()
    done = cli("import", str(chain.diff), "--base", str(chain.base), "--to",
               f"{reg.host}/mirror", "-q")
    assert done.exit_code == 0, done.output
    assert_new_set(reg)
    lines = done.stdout.splitlines()
    assert "omitted blobs: 4 (0 present, 0 mountable, 4 from --base, 0 missing)" in lines
    assert f"base {bundle_id(chain.base)}: no registry receipt ({reg.host}/mirror/" \
           f"bundler-receipts:sha256-{bundle_id(chain.base).split(':')[1]} not found); " \
           "the omitted blobs were checked all the same" in lines


def test_wrong_base_is_a_usage_error(chain: Chain, registry_factory: Any) -> None:
    reg = registry_factory()
    done = cli("import", str(chain.diff), "--base", str(chain.diff2), "--to",
               f"{reg.host}/mirror", "-q")
    assert done.exit_code == 2
    assert (f"--base {chain.diff2} is bundle {bundle_id(chain.diff2)}, but {chain.diff} is "
            f"a differential bundle on base {bundle_id(chain.base)}; give that bundle"
            ) in done.stderr
    zst = cli("import", str(chain.diff2), "--base", str(chain.diff_zst), "--to",
              f"{reg.host}/mirror", "-q")
    assert zst.exit_code == 2
    assert f"--base {chain.diff_zst}: a base is read at random; give it as a directory or " \
           "a .tar" in zst.stderr
    full = cli("import", str(chain.base), "--base", str(chain.base), "--to",
               f"{reg.host}/mirror", "-q")
    assert full.exit_code == 2
    assert f"--base {chain.base}: {chain.base} is a full bundle ({bundle_id(chain.base)}); " \
           "it needs no base" in full.stderr
    assert catalog(reg) == []


def test_pipe_import_of_a_tar_diff(chain: Chain, registry_factory: Any) -> None:
    reg = registry_factory()
    command = [sys.executable, "-m", "bundler", "import", "-", "--to", f"{reg.host}/mirror",
               "-q"]
    with open(chain.diff_tar, "rb") as stdin:
        refused = subprocess.run(command, stdin=stdin, capture_output=True, timeout=120)
    assert refused.returncode == 1
    assert b"4 omitted blobs are in no destination repository" in refused.stderr
    assert catalog(reg) == []
    with open(chain.diff_tar, "rb") as stdin:
        done = subprocess.run([*command, "--base", str(chain.base)], stdin=stdin,
                              capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_new_set(reg)
    data = registry_receipt(reg, "mirror/bundler-receipts", bundle_id(chain.diff))[1]
    assert json.loads(data)["bundleId"] == json.loads(
        (chain.diff_tar.parent / "diff.tar.receipt.json").read_bytes())["bundleId"]


# -- the dry run -------------------------------------------------------------------------
def test_dry_run_shows_the_chain(chain: Chain, registry_factory: Any) -> None:
    empty, full = registry_factory(), registry_factory()
    with_base(chain, full)
    mark = empty.mark()
    done = cli("import", str(chain.diff), "--to", f"{empty.host}/mirror", "--dry-run")
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert "omitted blobs: 4 (0 present, 0 mountable, 0 from --base, 4 missing)" in lines
    assert lines[-1] == (f"chain: incomplete: import base {bundle_id(chain.base)} first, "
                         "or give --base BUNDLE")
    assert {m for m, _ in empty.requests(mark)} <= {"GET", "HEAD"}
    done = cli("import", str(chain.diff), "--to", f"{empty.host}/mirror", "--dry-run",
               "--json", "--base", str(chain.base))
    doc = json.loads(done.stdout)["base"]
    assert (doc["fromBase"], doc["missing"], doc["complete"], doc["receiptFound"]) == \
        (4, 0, True, False)
    done = cli("import", str(chain.diff), "--to", f"{full.host}/mirror", "--dry-run")
    lines = done.stdout.splitlines()
    assert "omitted blobs: 4 (2 present, 2 mountable, 0 from --base, 0 missing)" in lines
    assert lines[-1] == "chain: complete"
    assert any(line.startswith(f"base {bundle_id(chain.base)} was imported on ")
               for line in lines)
    assert catalog(empty) == []


# -- receipts ----------------------------------------------------------------------------
def test_receipt_options(chain: Chain, registry_factory: Any) -> None:
    reg = registry_factory()
    done = cli("import", str(chain.base), "--to", f"{reg.host}/mirror", "--no-receipt", "-q")
    assert done.exit_code == 0
    assert "receipt:" not in done.stdout
    assert "mirror/bundler-receipts" not in catalog(reg)
    done = cli("import", str(chain.base), "--to", f"{reg.host}/mirror",
               "--receipt-repository", f"{reg.host}/ops/receipts", "-q")
    assert done.exit_code == 0
    data = registry_receipt(reg, "ops/receipts", bundle_id(chain.base))[1]
    assert data == (chain.base / "bundler-receipt.json").read_bytes()
    wrong = cli("import", str(chain.base), "--to", f"{reg.host}/mirror",
                "--receipt-repository", "receipts", "-q")
    assert wrong.exit_code == 2
    assert "--receipt-repository 'receipts': expected REGISTRY/REPOSITORY" in wrong.stderr


def test_malformed_receipt_inside_the_bundle(chain: Chain, registry_factory: Any,
                                             tmp_path: Path) -> None:
    import shutil

    reg = registry_factory()
    broken = tmp_path / "broken"
    shutil.copytree(chain.diff, broken)
    (broken / "bundler-receipt.json").write_text("{not json")
    done = cli("import", str(broken), "--to", f"{reg.host}/mirror", "-q")
    assert done.exit_code == 1
    assert f"{broken}/bundler-receipt.json is not a bundler receipt" in done.stderr
    (broken / "bundler-receipt.json").unlink()
    done = cli("import", str(broken), "--to", f"{reg.host}/mirror", "-q")
    assert done.exit_code == 1
    assert f"names base {bundle_id(chain.base)}" in done.stderr
    assert catalog(reg) == []


# -- copy, merge -------------------------------------------------------------------------
def test_copy_refuses_a_differential_bundle(chain: Chain, registry_factory: Any) -> None:
    reg = registry_factory()
    done = cli("copy", f"oci:{chain.diff}:{chain.refs['apps/a:2']}",
               f"docker://{reg.host}/copied/a:2", "-q")
    assert done.exit_code == 2
    assert (f"a differential bundle (base {bundle_id(chain.base)}) holds only the blobs its "
            "base does not; copy does not check that base: use bundler import "
            f"{chain.diff} --to REGISTRY[/PREFIX]") in done.stderr
    assert catalog(reg) == []


def test_merged_bundle_imports_alone(chain: Chain, registry_factory: Any,
                                     tmp_path: Path) -> None:
    full = tmp_path / "full.tar"
    merged = cli("merge", str(chain.base), str(chain.diff), "-o", str(full), "-q")
    assert merged.exit_code == 0, merged.output
    reg = registry_factory()
    done = cli("import", str(full), "--to", f"{reg.host}/mirror", "-q")
    assert done.exit_code == 0, done.output
    assert_new_set(reg)
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith(("base ", "omitted blobs"))]
    full_id = json.loads((tmp_path / "full.tar.receipt.json").read_bytes())["bundleId"]
    data = registry_receipt(reg, "mirror/bundler-receipts", full_id)[1]
    assert json.loads(data)["base"] is None and json.loads(data)["omitted"] == []
