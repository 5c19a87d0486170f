"""Export carries referrers: cosign tag-scheme signatures (the real cosign fixture),
OCI 1.1 referrers made by ``oras attach`` (through the referrers API, or the referrers
tag schema on Debian's docker-registry, which has no API), recursively; ``list`` shows
them under their subjects, ``verify`` checks their subjects are there."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.sandbox import LocalRegistry
from tests.referrers_tools import attach, index_entries, push_app, push_cosign_signature

SUBJECT = "dev.bundler.referrer.subject"
SCHEME = "dev.bundler.referrer.scheme"
REF_NAME = "org.opencontainers.image.ref.name"
SIGNATURE = "sha256:6162308b7421163281afe8bd1c69ae16d50e675cbe93ff8b34f8ad5efb71a866"


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def summary(entries: list[dict]) -> list[tuple]:
    return [(e["annotations"].get(REF_NAME), e["digest"], e["annotations"].get(SUBJECT),
             e["annotations"].get(SCHEME)) for e in entries]


def _signed(reg: LocalRegistry, tmp: Path, *, api: bool) -> dict[str, str]:
    """apps/signed:1.0 with a cosign .sig, an SBOM attached, and a signature of the SBOM."""
    image = push_app(reg)
    push_cosign_signature(reg, "apps/signed", image)
    sbom = attach(reg, "apps/signed:1.0", "example/sbom", tmp / "sbom", b"sbom", api=api)
    sbom_sig = attach(reg, f"apps/signed@{sbom['digest']}", "example/sig", tmp / "sig",
                      b"sig of sbom", api=api)
    return {"image": image, "sbom": sbom["digest"], "sbom_sig": sbom_sig["digest"]}


def _expected(reg: LocalRegistry, d: dict[str, str], scheme: str) -> list[tuple]:
    base = f"{reg.host}/apps/signed"
    return [
        (f"{base}:1.0", d["image"], None, None),
        (f"{base}:{d['image'].replace(':', '-')}.sig", SIGNATURE, d["image"], "tag"),
        (f"{base}@{d['sbom']}", d["sbom"], d["image"], scheme),
        (f"{base}@{d['sbom_sig']}", d["sbom_sig"], d["sbom"], scheme),
    ]


def test_export_without_referrers_api(registry: LocalRegistry, tmp_path: Path) -> None:
    d = _signed(registry, tmp_path, api=False)
    bundle = tmp_path / "bundle"
    result = run_cli("export", f"{registry.host}/apps/signed:1.0", "-o", str(bundle), "-q")
    assert result.exit_code == 0, result.output
    assert summary(index_entries(bundle)) == _expected(registry, d, "tag-schema")
    assert result.stdout.startswith("exported 1 image and 3 referrers to ")
    # the cosign signature is the fixture's bytes, unchanged
    assert (bundle / "blobs/sha256" / SIGNATURE.split(":")[1]).read_bytes() == \
        (Path(__file__).parent / "fixtures/cosign-signature-manifest.keyless-ghcr.json").read_bytes()
    listed = json.loads(run_cli("list", str(bundle), "--json").stdout)
    assert [(i["reference"], [(r["digest"], r["scheme"],
                               [x["digest"] for x in r.get("referrers", [])])
                              for r in i.get("referrers", [])]) for i in listed["images"]] == [
        (f"{registry.host}/apps/signed:1.0",
         [(SIGNATURE, "tag", []), (d["sbom"], "tag-schema", [d["sbom_sig"]])])]
    table = run_cli("list", str(bundle)).stdout.splitlines()
    assert table[2].startswith(f"  referrer: {registry.host}/apps/signed:sha256-")
    assert table[-1].startswith("1 image, 3 referrers, ")
    assert run_cli("verify", str(bundle)).exit_code == 0


def test_export_with_referrers_api(referrers_registry: LocalRegistry, tmp_path: Path) -> None:
    reg = referrers_registry
    d = _signed(reg, tmp_path, api=True)
    bundle = tmp_path / "bundle"
    result = run_cli("export", f"{reg.host}/apps/signed:1.0", "-o", str(bundle), "-q")
    assert result.exit_code == 0, result.output
    assert summary(index_entries(bundle)) == _expected(reg, d, "api")


def test_no_referrers_and_artifact_type(registry: LocalRegistry, tmp_path: Path) -> None:
    d = _signed(registry, tmp_path, api=False)
    ref = f"{registry.host}/apps/signed:1.0"
    off = run_cli("export", ref, "-o", str(tmp_path / "off"), "-q", "--no-referrers")
    assert off.exit_code == 0, off.output
    assert summary(index_entries(tmp_path / "off")) == [(ref, d["image"], None, None)]
    only = run_cli("export", ref, "-o", str(tmp_path / "only"), "-q",
                   "--referrers-artifact-type", "example/sbom")
    assert only.exit_code == 0, only.output
    assert summary(index_entries(tmp_path / "only")) == [
        (ref, d["image"], None, None),
        (f"{registry.host}/apps/signed@{d['sbom']}", d["sbom"], d["image"], "tag-schema")]
    both = run_cli("export", ref, "-o", str(tmp_path / "x"), "--no-referrers",
                   "--require-referrers")
    assert both.exit_code == 2


def test_unreadable_referrer_warns_or_fails(registry: LocalRegistry, tmp_path: Path) -> None:
    """A referrer listed in the tag schema index whose manifest is gone: a warning naming
    it (the image is exported), or exit 1 with --require-referrers."""
    d = _signed(registry, tmp_path, api=False)
    with registry.client() as client:
        gone = client.delete(f"{registry.url}/v2/apps/signed/manifests/{d['sbom']}")
        assert gone.status_code == 202
    ref = f"{registry.host}/apps/signed:1.0"
    result = run_cli("export", ref, "-o", str(tmp_path / "b"), "-q")
    assert result.exit_code == 0, result.output
    assert f"warning: referrer {registry.host}/apps/signed@{d['sbom']} of {d['image']} " \
        "cannot be read (left out)" in result.stderr
    assert [e["digest"] for e in index_entries(tmp_path / "b")] == [d["image"], SIGNATURE]
    strict = run_cli("export", ref, "-o", str(tmp_path / "c"), "-q", "--require-referrers")
    assert strict.exit_code == 1
    assert f"{registry.host}/apps/signed@{d['sbom']}" in strict.stderr
    assert not (tmp_path / "c" / "index.json").exists()


def test_verify_names_a_missing_subject(registry: LocalRegistry, tmp_path: Path) -> None:
    d = _signed(registry, tmp_path, api=False)
    bundle = tmp_path / "b"
    assert run_cli("export", f"{registry.host}/apps/signed:1.0", "-o", str(bundle),
                   "-q").exit_code == 0
    index = json.loads((bundle / "index.json").read_text())
    index["manifests"][2]["annotations"][SUBJECT] = "sha256:" + "0" * 64
    (bundle / "index.json").write_text(json.dumps(index))
    result = run_cli("verify", str(bundle), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["problems"] == [
        f"referrer {registry.host}/apps/signed@{d['sbom']}: its subject sha256:{'0' * 64} "
        "is not in the bundle"]


def test_verify_checks_subjects_in_an_archive(registry: LocalRegistry, tmp_path: Path) -> None:
    """An archive whose index.json names a referrer's subject it does not hold: verify
    says so (the archive is written by hand from a good export)."""
    import tarfile

    d = _signed(registry, tmp_path, api=False)
    bundle = tmp_path / "b"
    assert run_cli("export", f"{registry.host}/apps/signed:1.0", "-o", str(bundle),
                   "-q").exit_code == 0
    archive = tmp_path / "b.tar"
    assert run_cli("export", f"{registry.host}/apps/signed:1.0", "-o",
                   str(tmp_path / "ok.tar"), "-q").exit_code == 0  # with its 3 referrers
    index = json.loads((bundle / "index.json").read_text())
    index["manifests"][2]["annotations"][SUBJECT] = "sha256:" + "0" * 64
    (bundle / "index.json").write_text(json.dumps(index))
    with tarfile.open(archive, "w") as tar:  # small things first, as an export writes them
        for name in ("oci-layout", "index.json"):
            tar.add(bundle / name, arcname=name)
        blobs = sorted((bundle / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
        for blob in blobs:
            tar.add(blob, arcname=f"blobs/sha256/{blob.name}")
    assert run_cli("verify", str(tmp_path / "ok.tar")).exit_code == 0
    result = run_cli("verify", str(archive), "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["problems"] == [
        f"referrer {registry.host}/apps/signed@{d['sbom']}: its subject sha256:{'0' * 64} "
        "is not in the bundle"]


def test_referrer_with_a_blob_gone_is_left_out(registry: LocalRegistry, tmp_path: Path) -> None:
    """The cosign signature's payload blob is no longer served: the signature is left
    out with a warning naming it and the blob (the image and the other referrers are
    exported), or the export fails with --require-referrers."""
    d = _signed(registry, tmp_path, api=False)
    payload = "sha256:3e84ea487b4c52a3299cf2996f70e7e1721236a0998da33a0e30107108486b3e"
    with registry.client() as client:
        gone = client.delete(f"{registry.url}/v2/apps/signed/blobs/{payload}")
        assert gone.status_code == 202
    ref = f"{registry.host}/apps/signed:1.0"
    result = run_cli("export", ref, "-o", str(tmp_path / "b"), "-q")
    assert result.exit_code == 0, result.output
    sig = f"{registry.host}/apps/signed:{d['image'].replace(':', '-')}.sig"
    assert f"warning: referrer {sig} of {d['image']} cannot be read (left out): blob " \
        f"{payload} of {registry.host}/apps/signed is not served" in result.stderr
    assert [e["digest"] for e in index_entries(tmp_path / "b")] == [
        d["image"], d["sbom"], d["sbom_sig"]]
    strict = run_cli("export", ref, "-o", str(tmp_path / "c"), "-q", "--require-referrers")
    assert strict.exit_code == 1
    assert sig in strict.stderr
