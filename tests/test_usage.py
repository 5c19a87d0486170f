"""What a user sees when the command line or the output is wrong: usage errors exit 2
before any network use, unwritable outputs give one ``error:`` line (no traceback) and
leave nothing behind, Ctrl-C of an archive export keeps nothing, singular summaries."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.sandbox import LocalRegistry, SeededSet, make_image, push, random_layer

Seeded = tuple[LocalRegistry, SeededSet]
UNREACHABLE = "127.0.0.1:1/app/x:1"  # nothing listens on port 1


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def usage_error(result: Result, command: str, message: str) -> None:
    """click's usage error: exit 2, usage line, hint, then ``Error: message``."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    args = "BUNDLE" if command == "import" else "[REFERENCES]..."
    assert result.stderr == (
        f"Usage: main {command} [OPTIONS] {args}\n"
        f"Try 'main {command} --help' for help.\n\nError: {message}\n"
    )


def tar_of(layout: Path, target: Path,
           members: tuple[str, ...] = ("oci-layout", "index.json", "blobs")) -> Path:
    """A plain tar of a layout directory's ``members``, in that order."""
    import tarfile

    with tarfile.open(target, "w") as tar:
        for member in members:
            tar.add(layout / member, arcname=member)
    return target


# -- 1. sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["0", "0KiB", "1023", "0.5KiB"])
def test_chunk_size_below_one_kib_is_a_usage_error(tmp_path: Path, size: str) -> None:
    result = run_cli("import", str(tmp_path / "absent"), "--to", "127.0.0.1:1/x",
                     "--chunk-size", size)
    usage_error(result, "import", f"Invalid value for '--chunk-size': {size!r} is too small: "
                                  "--chunk-size must be at least 1.0 KiB")


@pytest.mark.parametrize("size", ["0", "100B"])
def test_split_size_below_one_kib_is_a_usage_error(tmp_path: Path, size: str) -> None:
    result = run_cli("export", UNREACHABLE, "-o", str(tmp_path / "b.tar"), "--split-size", size)
    usage_error(result, "export", f"Invalid value for '--split-size': {size!r} is too small: "
                                  "--split-size must be at least 1.0 KiB")
    assert list(tmp_path.iterdir()) == []


# -- 2. outputs that cannot be written ---------------------------------------------------


def test_export_into_an_existing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    taken = tmp_path / "notes"
    taken.write_text("mine\n")
    result = run_cli("export", UNREACHABLE, "-o", str(taken), "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {taken}: exists and is not a directory; a directory bundle needs a directory "
        "(name an archive NAME.tar or NAME.tar.zst, or choose another output)\n"
    )
    assert result.stdout == ""
    assert taken.read_text() == "mine\n"


def test_export_below_a_file_names_the_path_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("mine\n")
    out = tmp_path / "notes" / "bundle"
    result = run_cli("export", UNREACHABLE, "-o", str(out), "-q")
    assert result.exit_code == 1
    assert result.stderr == f"error: {out}: cannot create the bundle directory: Not a directory\n"


def _read_only(path: str) -> OSError:
    return OSError(errno.EROFS, "Read-only file system", path)


def test_export_into_a_read_only_directory(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        raise _read_only(str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    out = tmp_path / "ro" / "b"
    result = run_cli("export", UNREACHABLE, "-o", str(out), "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {out}: cannot create the bundle directory: Read-only file system\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["b.tar.zst", "b.tar"])
def test_archive_export_into_a_read_only_directory(tmp_path: Path, name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def mkdtemp(*args: object, dir: str = "", **kwargs: object) -> str:
        raise _read_only(str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    out = tmp_path / name
    result = run_cli("export", UNREACHABLE, "-o", str(out), "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {out}: cannot create the archive: cannot create a spool directory in "
        f"{tmp_path}: Read-only file system\n")
    assert list(tmp_path.iterdir()) == []


def test_failed_first_export_leaves_no_directory(tmp_path: Path) -> None:
    out = tmp_path / "new" / "bundle"
    result = run_cli("export", UNREACHABLE, "-o", str(out), "-q", "--retries", "0")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {UNREACHABLE}: ")
    assert list(tmp_path.iterdir()) == []  # the parent this run made is gone too


def test_failed_export_into_an_empty_directory_leaves_it_empty(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    result = run_cli("export", UNREACHABLE, "-o", str(out), "-q", "--retries", "0",
                     "--keep-going")
    assert result.exit_code == 1
    assert out.is_dir() and list(out.iterdir()) == []
    listed = run_cli("list", str(out))
    assert listed.stderr == (
        f"error: {out}: not an OCI image layout (oci-layout or index.json missing)\n")


def test_failed_export_keeps_an_existing_bundle(seeded_registry: Seeded, tmp_path: Path) -> None:
    registry, seeded = seeded_registry
    out = tmp_path / "bundle"
    ref = seeded.get("base/os", "1").reference
    assert run_cli("export", ref, "-o", str(out), "-q").exit_code == 0
    before = sorted(p.name for p in out.rglob("*"))
    result = run_cli("export", UNREACHABLE, "-o", str(out), "-q", "--retries", "0")
    assert result.exit_code == 1
    assert sorted(p.name for p in out.rglob("*")) == before
    assert run_cli("list", str(out)).exit_code == 0


# -- 4. command-line mistakes exit 2, before the bundle is opened ------------------------


@pytest.mark.parametrize("to, message", [
    ("mirror", "--to 'mirror': 'mirror' is not a registry host; expected REGISTRY[/PREFIX] "
               "with REGISTRY like registry.internal:5000 or localhost"),
    ("", "--to '': expected REGISTRY[/PREFIX]"),
    ("127.0.0.1:5000/Mirror", "--to '127.0.0.1:5000/Mirror': repository name must be lowercase"),
    ("127.0.0.1:5000/mirror:tag", "--to '127.0.0.1:5000/mirror:tag': expected "
     "REGISTRY[/PREFIX] without a tag or digest (each image keeps its own tag)"),
    ("http://127.0.0.1:5000/m", "--to 'http://127.0.0.1:5000/m': expected REGISTRY[/PREFIX] "
     "without a scheme, e.g. 127.0.0.1:5000/m"),
])
def test_bad_to_is_a_usage_error(tmp_path: Path, to: str, message: str) -> None:
    result = run_cli("import", str(tmp_path / "absent"), "--to", to)
    usage_error(result, "import", message)


@pytest.mark.parametrize("line, message", [
    ("a", "expected SOURCE=DESTINATION, got 'a'"),
    ("a=127.0.0.1:5000/Up", "mapping destination '127.0.0.1:5000/Up': invalid reference "
                            "'127.0.0.1:5000/Up': repository name must be lowercase"),
    ("a=nohost/repo:1", "mapping destination 'nohost/repo:1': 'nohost/repo:1' names no "
                        "registry host; write the registry first, e.g. "
                        "registry.internal:5000/nohost/repo:1 (docker.io/nohost/repo:1 for "
                        "Docker Hub)"),
])
def test_bad_mapping_file_is_a_usage_error(tmp_path: Path, line: str, message: str) -> None:
    mapping = tmp_path / "m.txt"
    mapping.write_text(f"# mirror\nb=127.0.0.1:5000/b\n{line}\n")
    result = run_cli("import", str(tmp_path / "absent"), "--mapping", str(mapping))
    usage_error(result, "import", f"{mapping}:3: {message}")


@pytest.mark.parametrize("option, message", [
    (["--src-creds", "nocolon"], "credentials must look like USER:PASSWORD"),
    (["--src-cert-dir", "/nonexistent"],
     "Invalid value for '--src-cert-dir': Directory '/nonexistent' does not exist."),
])
def test_bad_source_options_are_usage_errors(tmp_path: Path, option: list[str],
                                             message: str) -> None:
    result = run_cli("export", UNREACHABLE, "-o", str(tmp_path / "b"), *option)
    usage_error(result, "export", message)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_destinations_are_a_usage_error(seeded_registry: Seeded,
                                                  tmp_path: Path) -> None:
    registry, seeded = seeded_registry
    one, two = seeded.get("base/os", "1").reference, seeded.get("base/os", "2").reference
    bundle = tmp_path / "bundle"
    assert run_cli("export", one, two, "-o", str(bundle), "-q").exit_code == 0
    mapping = tmp_path / "m.txt"
    mapping.write_text(f"{one}=127.0.0.1:1/os:stable\n{two}=127.0.0.1:1/os:stable\n")
    result = run_cli("import", str(bundle), "--mapping", str(mapping), "-q")
    usage_error(result, "import", f"mapping sources {one!r} and {two!r} both go to "
                                  "127.0.0.1:1/os:stable; give each image its own destination")


# -- 7. small messages -------------------------------------------------------------------


def test_empty_images_file_says_no_references(tmp_path: Path) -> None:
    images = tmp_path / "images.txt"
    images.write_text("# nothing yet\n\n")
    result = run_cli("export", "-f", str(images), "-o", str(tmp_path / "b"))
    usage_error(result, "export", "no image references given")
    assert run_cli("export", "-o", str(tmp_path / "b")).stderr.endswith(
        "Error: no image references given\n")


def test_bad_line_of_an_images_file_is_named_by_file_and_line(tmp_path: Path) -> None:
    images = tmp_path / "images.txt"
    images.write_text("# base\n127.0.0.1:1/a:1\n\n127.0.0.1:1/Bad:1  # typo\n")
    result = run_cli("export", "-f", str(images), "-o", str(tmp_path / "b"))
    usage_error(result, "export", f"{images}:4: invalid reference '127.0.0.1:1/Bad:1': "
                                  "repository name must be lowercase")


def test_logout_all_with_nothing_stored(tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    result = run_cli("logout", "--all", "--authfile", str(authfile))
    assert result.exit_code == 0
    assert result.stdout == f"No stored credentials to remove (in {authfile})\n"
    assert not authfile.exists()


def test_one_image_is_singular_everywhere(seeded_registry: Seeded, tmp_path: Path,
                                          registry: LocalRegistry) -> None:
    seeded = seeded_registry[1]
    ref = seeded.get("base/os", "1").reference
    bundle = tmp_path / "bundle"
    plan = run_cli("export", ref, "-o", str(bundle), "--dry-run")
    assert plan.stdout.splitlines()[0] == f"dry run: would export 1 image to {bundle}"
    exported = run_cli("export", ref, "-o", str(bundle), "-q")
    assert exported.stdout.startswith(f"exported 1 image to {bundle}: ")
    listed = run_cli("list", str(bundle))
    assert listed.stdout.splitlines()[-1].startswith("1 image, ")
    verified = run_cli("verify", str(bundle))
    assert verified.stdout.startswith(f"{bundle}: OK: 1 image, ")
    to = f"{registry.host}/m"
    plan = run_cli("import", str(bundle), "--to", to, "--dry-run")
    assert plan.stdout.splitlines()[0] == f"dry run: would import 1 image from {bundle}"
    imported = run_cli("import", str(bundle), "--to", to, "-q")
    assert imported.stdout.startswith("imported 1 image (0 already there); ")


# -- 6. Ctrl-C of an archive export ------------------------------------------------------


def test_ctrl_c_of_an_archive_export_says_nothing_was_kept(registry: LocalRegistry,
                                                          fault_proxy, tmp_path: Path) -> None:
    small, big = random_layer(71, 200_000), random_layer(72, 3 << 20)
    image = make_image([small, big])
    push(registry, "cut/app", image, tag="1")
    proxy = fault_proxy(registry.url)
    proxy.slow(big.digest, 300_000, times=1)  # ~10 s: a loaded host still sees it mid-way
    where = tmp_path / "out"
    where.mkdir()
    out = where / "b.tar.zst"
    args = [sys.executable, "-m", "bundler.cli", "export", f"{proxy.host}/cut/app:1",
            "-o", str(out), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def spooled() -> int:
        return sum(p.stat().st_size for p in where.glob(".b.tar.zst.spool-*/*")
                   if p.is_file())

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and spooled() < 300_000 and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the export ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out_bytes, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out_bytes == b""
    assert err.decode().splitlines() == [
        f"interrupted: the archive {out} was not written and nothing was kept; run the same "
        "command again to start over"]
    assert list(where.iterdir()) == []  # no archive, no spool


@pytest.mark.parametrize("command, prefix", [(["list"], "error"), (["verify"], "problem"),
                                             (["import", "--to", "127.0.0.1:1/m"], "error")])
def test_a_missing_bundle_is_named_as_missing(tmp_path: Path, command: list[str],
                                              prefix: str) -> None:
    missing = tmp_path / "nothing-here.tar.zst"
    result = run_cli(command[0], str(missing), *command[1:])
    assert result.exit_code == 1
    assert result.stderr == (f"{prefix}: {missing}: no such bundle (no directory, archive or "
                             "volumes of that name)\n")
    assert not missing.exists()


# -- damaged bundles: a clear error, never a traceback ----------------------------------------


def test_verify_and_list_name_a_blob_that_cannot_be_read(seeded_registry: Seeded, tmp_path):
    from bundler import export_bundle

    registry, seeded = seeded_registry
    out = tmp_path / "b"
    export_bundle([f"{registry.host}/base/os:1"], out)
    layer = next(iter(seeded.get("base/os", "1").item.layers)).digest
    blob = out / "blobs" / "sha256" / layer.split(":")[1]
    blob.unlink()
    blob.mkdir()  # a directory where the layer file was
    verify = run_cli("verify", str(out))
    assert verify.exit_code == 1
    assert f"{blob}: cannot read blob {layer}: Is a directory" in verify.stderr
    assert "Traceback" not in verify.stderr + verify.stdout


@pytest.mark.parametrize("command", ["verify", "list", "import"])
def test_a_name_annotation_that_is_no_string_is_a_clear_error(command: str,
                                                              seeded_registry: Seeded,
                                                              tmp_path):
    import json

    from bundler import export_bundle

    registry, _ = seeded_registry
    out = tmp_path / "b"
    export_bundle([f"{registry.host}/base/os:1"], out)
    index = json.loads((out / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = 5
    (out / "index.json").write_text(json.dumps(index))
    args = ["--to", f"{registry.host}/never"] if command == "import" else []
    result = run_cli(command, str(out), *args)
    assert result.exit_code == 1, result.output
    assert "annotations must map strings to strings" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_verify_of_volumes_of_two_widths_is_a_clear_error(tmp_path):
    for name in ("v.tar.000", "v.tar.001", "v.tar.0002"):
        (tmp_path / name).write_bytes(b"x")
    result = run_cli("verify", str(tmp_path / "v.tar"))
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path / 'v.tar'}: volumes numbered with 3 digits "
                             "and v.tar.0002 lie side by side; keep the volumes of one bundle "
                             "only\n")


@pytest.mark.parametrize("command", ["verify", "list"])
def test_ctrl_c_in_verify_or_list_exits_130(command: str, monkeypatch, tmp_path):
    from bundler import bundle as api

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "verify_bundle" if command == "verify" else "list_bundle",
                        interrupted)
    result = run_cli(command, str(tmp_path))
    assert result.exit_code == 130
    assert result.stderr.startswith("interrupted")


@pytest.mark.parametrize(("value", "message"), [
    ("nan", "nan is not a number of seconds"),
    ("inf", "inf is not in the range 0<=x<=30"),
    ("31", "31.0 is not in the range 0<=x<=30"),
])
@pytest.mark.parametrize("command", ["export", "import"])
def test_retry_delay_must_be_seconds_from_0_to_30(command: str, value: str, message: str,
                                                   tmp_path):
    target = (["127.0.0.1:1/a:1", "-o", str(tmp_path / "b")] if command == "export"
              else [str(tmp_path), "--to", "127.0.0.1:1/m"])
    result = run_cli(command, *target, "--retry-delay", value)
    assert result.exit_code == 2
    assert f"Invalid value for '--retry-delay': {message}" in result.stderr


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_verify_names_every_image_that_uses_a_damaged_blob(kind: str, seeded_registry: Seeded,
                                                           tmp_path):

    from bundler import export_bundle

    registry, seeded = seeded_registry
    names = [f"{registry.host}/{r}" for r in ("base/os:1", "apps/api:1.0", "legacy/tool:latest")]
    base, api = seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")
    shared = sorted(set(base.blob_sizes) & set(api.blob_sizes))[0]
    assert shared not in seeded.get("legacy/tool", "latest").blob_sizes
    out = tmp_path / "b"
    export_bundle(names, out)
    blob = out / "blobs" / "sha256" / shared.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.write_bytes(bytes(data))
    target = out if kind == "dir" else tar_of(out, tmp_path / "b.tar")
    result = run_cli("verify", str(target))
    assert result.exit_code == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"problem: {names[0]}, {names[1]}: ")
    assert shared in problems[0]


def _nest(bundle, levels: int) -> None:  # type: ignore[no-untyped-def]
    """Wrap the first image of a directory bundle in ``levels`` indexes."""
    import hashlib
    import json

    index_path = bundle / "index.json"
    index = json.loads(index_path.read_text())
    entry = index["manifests"][0]
    inner = {k: entry[k] for k in ("mediaType", "digest", "size")}
    for _ in range(levels):
        raw = json.dumps({"schemaVersion": 2,
                          "mediaType": "application/vnd.oci.image.index.v1+json",
                          "manifests": [inner]}).encode()
        digest = hashlib.sha256(raw).hexdigest()
        (bundle / "blobs" / "sha256" / digest).write_bytes(raw)
        inner = {"mediaType": "application/vnd.oci.image.index.v1+json",
                 "digest": f"sha256:{digest}", "size": len(raw)}
    index["manifests"][0] = {**inner, "annotations": entry["annotations"]}
    index_path.write_text(json.dumps(index))


def test_verify_refuses_indexes_nested_deeper_than_import_takes(seeded_registry: Seeded,
                                                                tmp_path):
    from bundler import export_bundle

    registry, _ = seeded_registry
    ref = f"{registry.host}/base/os:1"
    for levels, ok in ((8, True), (9, False)):
        out = tmp_path / f"n{levels}"
        export_bundle([ref], out)
        _nest(out, levels)
        verify = run_cli("verify", str(out))
        listing = run_cli("list", str(out))
        assert (verify.exit_code, listing.exit_code) == ((0, 0) if ok else (1, 1)), \
            verify.output + listing.output
        if not ok:
            assert f"problem: {ref}: manifest sha256:" in verify.stderr
            assert "is under more than 8 levels of indexes" in verify.stderr
            assert "indexes nested deeper than 8 levels" in listing.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"garbage", "oci-layout is not JSON"),
    (b'{"imageLayoutVersion": "2.0.0"}',
     "oci-layout says imageLayoutVersion '2.0.0'; this version of bundler reads layouts of "
     "version 1.x"),
    (b"{}", "oci-layout has no imageLayoutVersion"),
])
@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_a_bad_oci_layout_file_is_a_problem(content: bytes, message: str, kind: str,
                                            seeded_registry: Seeded, tmp_path):

    from bundler import export_bundle

    registry, _ = seeded_registry
    out = tmp_path / "b"
    export_bundle([f"{registry.host}/base/os:1"], out)
    (out / "oci-layout").write_bytes(content)
    target = out if kind == "dir" else tar_of(out, tmp_path / "b.tar")
    for command in ("verify", "list"):
        result = run_cli(command, str(target))
        assert result.exit_code == 1, (command, result.output)
        assert message in result.stderr


def test_verify_of_an_archive_without_oci_layout_or_in_the_wrong_order(seeded_registry: Seeded,
                                                                       tmp_path):

    from bundler import export_bundle

    registry, seeded = seeded_registry
    out = tmp_path / "b"
    export_bundle([f"{registry.host}/base/os:1"], out)
    bare = tar_of(out, tmp_path / "bare.tar", ("index.json", "blobs"))
    result = run_cli("verify", str(bare))
    assert result.exit_code == 1
    assert f"problem: {bare}: no oci-layout in the archive" in result.stderr
    # blobs first, index.json last (plain tar of a directory): from the file, verify and
    # import read it in any order; only a pipe needs bundler's order
    from bundler.registry.client import MANIFEST_LIMIT

    big = make_image([random_layer(7, MANIFEST_LIMIT + 1)])
    push(registry, f"big-{tmp_path.name}/one", big, tag="1")
    out2 = tmp_path / "big"
    export_bundle([f"{registry.host}/big-{tmp_path.name}/one:1"], out2)
    wrong = tar_of(out2, tmp_path / "wrong.tar", ("blobs", "index.json", "oci-layout"))
    result = run_cli("verify", str(wrong))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert run_cli("import", str(wrong), "--to", f"{registry.host}/w", "-q").exit_code == 0
    piped = CliRunner().invoke(main, ["import", "-", "--to", f"{registry.host}/p", "-q"],
                               input=wrong.read_bytes(), catch_exceptions=False)
    assert piped.exit_code == 1
    assert "arrived before the manifests that name it; read once (from a pipe" in piped.stderr
    right = tmp_path / "right.tar"
    assert run_cli("export", f"{registry.host}/big-{tmp_path.name}/one:1", "-o", str(right),
                   "-q").exit_code == 0
    result = run_cli("verify", str(right))
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_images_file_from_stdin_and_with_a_byte_order_mark(seeded_registry: Seeded, tmp_path):
    registry, seeded = seeded_registry
    ref = f"{registry.host}/base/os:1"
    piped = CliRunner().invoke(main, ["export", "-f", "-", "-o", str(tmp_path / "a"), "-q"],
                               input=f"# from a pipe\n{ref}\n", catch_exceptions=False)
    assert piped.exit_code == 0, piped.output
    listed = tmp_path / "images.txt"
    listed.write_bytes(b"\xef\xbb\xbf" + ref.encode() + b"\n")
    bom = run_cli("export", "-f", str(listed), "-o", str(tmp_path / "b"), "-q")
    assert bom.exit_code == 0, bom.output
    for out in ("a", "b"):
        index = (tmp_path / out / "index.json").read_text()
        assert seeded.get("base/os", "1").digest in index and ref in index


def test_export_refuses_a_directory_that_holds_other_things(seeded_registry: Seeded, tmp_path):
    registry, seeded = seeded_registry
    ref = f"{registry.host}/base/os:1"
    other = tmp_path / "docs"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    result = run_cli("export", ref, "-o", str(other), "-q")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {other}: a directory that holds other files and is no "
                             "OCI image layout (no oci-layout); export into a new or empty "
                             "directory, or into an existing bundle\n")
    assert sorted(p.name for p in other.iterdir()) == ["readme.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("export", ref, "-o", str(empty), "-q").exit_code == 0
    assert seeded.get("base/os", "1").digest in (empty / "index.json").read_text()
    assert run_cli("export", f"{registry.host}/base/os:2", "-o", str(empty), "-q").exit_code == 0


@pytest.mark.parametrize("kind", ["dir"])  # an archive's head must hold every manifest
def test_list_shows_the_readable_images_and_names_the_broken_one(kind: str,
                                                                 seeded_registry: Seeded,
                                                                 tmp_path):
    import json

    from bundler import export_bundle

    registry, seeded = seeded_registry
    names = [f"{registry.host}/{r}" for r in ("base/os:1", "multi/arch:1", "apps/api:1.0")]
    out = tmp_path / "b"
    export_bundle(names, out)
    child = seeded.get("multi/arch", "1").item.children[0].digest
    (out / "blobs" / "sha256" / child.split(":")[1]).unlink()
    target = out if kind == "dir" else tar_of(out, tmp_path / "b.tar")
    result = run_cli("list", str(target))
    assert result.exit_code == 1
    problems = result.stderr.splitlines()
    assert len(problems) == 1 and problems[0].startswith(f"problem: {names[1]}: ")
    assert child in problems[0]
    rows = [line.split()[0] for line in result.stdout.splitlines()[1:-1]]
    assert rows == [names[0], names[2]]
    assert result.stdout.splitlines()[-1].endswith("; 1 image unreadable (see above)")
    doc = json.loads(run_cli("list", str(target), "--json").stdout)
    assert [i["reference"] for i in doc["images"]] == [names[0], names[2]]
    assert len(doc["problems"]) == 1 and doc["problems"][0].startswith(f"{names[1]}: ")


@pytest.mark.parametrize("option", ["--to", "--mapping"])
def test_to_and_mapping_are_given_once(option: str, tmp_path):
    values = ["127.0.0.1:1/a", "127.0.0.1:2/b"] if option == "--to" else ["m1.txt", "m2.txt"]
    result = run_cli("import", str(tmp_path), option, values[0], option, values[1])
    usage_error(result, "import", f"Invalid value for '{option}': given 2 times "
                                  f"({values[0]}, {values[1]}); give it once")
