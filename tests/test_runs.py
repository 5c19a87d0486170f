"""What a run shows and does around the transfer: --dry-run plans, progress on stderr
(json, plain, quiet), and Ctrl-C (exit 130, a line on what was kept, a rerun finishes)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler import export_bundle
from bundler.cli.main import human, main
from bundler.sandbox import LocalRegistry, SeededSet, make_image, push, random_layer

Seeded = tuple[LocalRegistry, SeededSet]
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def sizes(*entries) -> dict[str, int]:  # type: ignore[no-untyped-def]
    out: dict[str, int] = {}
    for entry in entries:
        out.update(entry.blob_sizes)
    return out


# -- --dry-run ------------------------------------------------------------------------------


def test_export_dry_run_fetches_no_blob_and_writes_nothing(seeded_registry: Seeded, fault_proxy,
                                                           tmp_path):
    registry, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    bundle = tmp_path / "bundle"
    assert run_cli("export", f"{proxy.host}/base/os:1", "-o", str(bundle), "-q").exit_code == 0
    before = snapshot(bundle)
    proxy.requests.clear()
    result = run_cli("export", f"{proxy.host}/base/os:1", f"{proxy.host}/base/os:2",
                     "-o", str(bundle), "--dry-run")
    os1, os2 = seeded.get("base/os", "1"), seeded.get("base/os", "2")
    blobs, have = sizes(os1, os2), sizes(os1)
    new = {d: n for d, n in blobs.items() if d not in have}
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"dry run: would export 2 images to {bundle}",
        f"  {proxy.host}/base/os:1 -> {os1.digest}",
        f"  {proxy.host}/base/os:2 -> {os2.digest}",
        f"blobs: 5 ({human(sum(blobs.values()))}) after dedup; to download 2 "
        f"({human(sum(new.values()))}), already in the bundle 3 ({human(sum(have.values()))})",
    ]
    assert result.stderr == ""
    assert proxy.count(None, r"/blobs/") == 0
    assert proxy.count("GET", r"/manifests/") == 1  # base/os:1's manifest is in the bundle
    assert snapshot(bundle) == before


@pytest.mark.parametrize("name", ["new-bundle", "new.tar.zst"])
def test_export_dry_run_json_creates_no_output(seeded_registry: Seeded, fault_proxy, tmp_path,
                                               name):
    registry, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    output = tmp_path / name
    result = run_cli("export", f"{proxy.host}/multi/arch:1", "-o", str(output), "--dry-run",
                     "--json")
    assert result.exit_code == 0, result.stderr
    multi = seeded.get("multi/arch", "1")
    total = sum(multi.blob_sizes.values())
    doc = json.loads(result.stdout)
    assert doc["images"] == [{"reference": f"{proxy.host}/multi/arch:1", "digest": multi.digest,
                              "size": total + sum(len(m) for m in multi.manifests.values())}]
    assert (doc["blobs"], doc["blobBytes"], doc["toFetch"], doc["fetchBytes"], doc["present"]) \
        == (len(multi.blob_sizes), total, len(multi.blob_sizes), total, 0)
    assert proxy.count(None, r"/blobs/") == 0
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_import_dry_run_heads_only_and_matches_the_real_import(seeded_registry: Seeded,
                                                               registry_factory, fault_proxy,
                                                               tmp_path, kind):
    registry, seeded = seeded_registry
    suffix = ".tar" if kind == "tar" else ""
    small, full = tmp_path / f"small{suffix}", tmp_path / f"full{suffix}"
    export_bundle([f"{registry.host}/base/os:1"], small)
    names = [f"{registry.host}/{r}" for r in ("base/os:1", "base/os:2", "apps/web:1.0")]
    export_bundle(names, full, referrers=None)  # web:1.0's signature aside
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    assert run_cli("import", str(small), "--to", f"{proxy.host}/m", "-q").exit_code == 0
    deadline = time.monotonic() + 10  # the proxy may record the tag PUT just after answering
    while proxy.count("PUT", r"/m/base/os/manifests/1$") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.requests.clear()
    result = run_cli("import", str(full), "--to", f"{proxy.host}/m", "--dry-run")
    assert result.exit_code == 0, result.stderr
    os2, web = seeded.get("base/os", "2"), seeded.get("apps/web", "1.0")
    blobs = sizes(os2, web)
    uploads = {d: blobs[d] for d in blobs if d not in seeded.get("base/os", "1").blob_sizes}
    lines = [f"dry run: would import 3 images from {full} (1 already there)"]
    for name, there in zip(names, ["already there", "to push", "to push"], strict=True):
        repo, tag = name.split("/", 1)[1].split(":")
        digest = seeded.get(repo, tag).digest
        lines.append(f"  {name} -> {proxy.host}/m/{repo}:{tag}@{digest}: {there}")
    lines.append(f"blobs: 6 ({human(sum(blobs.values()))}) after dedup; to upload 4 "
                 f"({human(sum(uploads.values()))}); per repository: 2 to mount, "
                 "1 already present")
    assert result.stdout.splitlines() == lines
    assert proxy.count("GET", r"/blobs/") == 0
    assert sum(proxy.count(m) for m in MUTATING) == 0
    assert proxy.count("HEAD") == len(proxy.requests) - proxy.count("GET", r"^/v2/$") \
        - proxy.count("GET", r"/manifests/")
    as_json = run_cli("import", str(full), "--to", f"{proxy.host}/m", "--dry-run", "--json")
    assert as_json.exit_code == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    os1 = seeded.get("base/os", "1")
    present_bytes = sum(n for d, n in os2.blob_sizes.items() if d in os1.blob_sizes)
    pair_bytes = sum(os2.blob_sizes.values()) + sum(web.blob_sizes.values())  # two repositories
    assert {k: doc[k] for k in ("dryRun", "blobs", "blobBytes", "toUpload", "uploadBytes",
                                "toMount", "present", "presentBytes")} == {
        "dryRun": "import", "blobs": 6, "blobBytes": sum(blobs.values()), "toUpload": 4,
        "uploadBytes": sum(uploads.values()), "toMount": 2, "present": 1,
        "presentBytes": present_bytes}
    assert doc["mountBytes"] == pair_bytes - present_bytes - doc["uploadBytes"]
    assert [i["present"] for i in doc["images"]] == [True, False, False]
    real = run_cli("import", str(full), "--to", f"{proxy.host}/m", "-q")
    assert real.stdout.splitlines()[0].startswith(
        f"imported 3 images (1 already there); blobs uploaded 4 "
        f"({human(sum(uploads.values()))}), mounted 2, already present 1; ")


# -- progress and summary -------------------------------------------------------------------


def test_json_progress_is_one_event_per_line(seeded_registry: Seeded, tmp_path):
    registry, seeded = seeded_registry
    refs = [f"{registry.host}/base/os:1", f"{registry.host}/legacy/tool:latest"]
    result = run_cli("export", *refs, "-o", str(tmp_path / "b"), "--progress", "json")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    images = [(e["name"], e["state"], e["done"], e["total"]) for e in events
              if e["kind"] == "image"]
    expected_sizes = {}
    for ref, entry in zip(refs, [seeded.get("base/os", "1"), seeded.get("legacy/tool")],
                          strict=True):
        expected_sizes[ref] = sum(entry.blob_sizes.values()) + len(entry.manifest_bytes)
    starts = sorted(i for i in images if i[1] == "start")
    assert starts == sorted((r, "start", 0, n) for r, n in expected_sizes.items())
    assert images[-2:] == [(r, "done", n, n) for r, n in expected_sizes.items()]
    blobs = sizes(seeded.get("base/os", "1"), seeded.get("legacy/tool"))
    done = {e["name"] for e in events if e["kind"] == "blob" and e["state"] == "done"}
    assert done == set(blobs)
    moved: dict[str, list[int]] = {}
    for e in events:
        if e["kind"] == "blob" and e["state"] == "progress":
            moved.setdefault(e["name"], []).append(e["done"])
    assert set(moved) == set(blobs)  # running sums: rising, ending at the blob's size
    assert all(v == sorted(v) and v[-1] == blobs[name] for name, v in moved.items())
    plans = [e for e in events if e["kind"] == "plan"]
    assert plans == [{"kind": "plan", "name": "export", "state": "start", "done": 0,
                      "total": sum(blobs.values()), "images": 2}]
    first_blob = next(i for i, e in enumerate(events) if e["kind"] == "blob")
    assert events.index(plans[0]) < first_blob
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"exported 2 images to {tmp_path / 'b'}: ")
    assert line.endswith(" MB/s")


def test_quiet_prints_nothing_on_stderr_and_plain_lines_otherwise(seeded_registry: Seeded,
                                                                  tmp_path):
    registry, seeded = seeded_registry
    refs = [f"{registry.host}/base/os:1", f"{registry.host}/apps/api:1.0"]
    quiet = run_cli("export", *refs, "-o", str(tmp_path / "q"), "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    plain = run_cli("export", *refs, "-o", str(tmp_path / "p"))  # stderr is not a terminal
    assert plain.exit_code == 0
    total = sum(sizes(seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")).values())
    assert plain.stderr.splitlines() == [
        f"export: 2 images, up to {human(total)} to transfer",
        *(f"image {r}: done" for r in refs),
    ]


def test_overall_bar_total_follows_the_plan_and_what_needs_no_transfer() -> None:
    from bundler.cli.reporters import make_reporter
    from bundler.events import Event, Tally

    bars = make_reporter("bar", Tally())
    a, b, c = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
    events = [
        Event("plan", "import", "start", total=300, images=2),
        Event("blob", a, "start", total=100), Event("blob", a, "progress", 100, 100),
        Event("blob", a, "done", 100, 100),
        Event("blob", b, "skipped", total=50),       # the destination has it: 300 -> 250
        Event("blob", c, "mounted", total=150),      # mounted, no transfer: 250 -> 100
        Event("blob", c, "start", total=150),        # ... a refused mount after all: 250
        Event("blob", c, "progress", 150, 150), Event("blob", c, "done", 150, 150),
        Event("blob", a, "start", total=100),        # sent a second time: 350
        Event("blob", a, "progress", 100, 100), Event("blob", a, "done", 100, 100),
        Event("image", "r/one:1", "done", 1, 1), Event("image", "r/two:1", "done", 1, 1),
    ]
    for event in events:
        bars(event)
    assert (bars.overall.total, bars.overall.n) == (350, 350)
    assert bars.overall.postfix == "2/2 images"
    bars.close()


# -- Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_exits_130_says_what_was_kept_and_a_rerun_finishes(registry: LocalRegistry,
                                                                  fault_proxy, tmp_path):
    small, big = random_layer(61, 200_000), random_layer(62, 3 << 20)
    image = make_image([small, big])
    push(registry, "cut/app", image, tag="1")
    proxy = fault_proxy(registry.url)
    proxy.slow(big.digest, 300_000, times=1)  # ~10 s: a loaded host still sees it mid-way
    bundle = tmp_path / "bundle"
    args = [sys.executable, "-m", "bundler.cli", "export", f"{proxy.host}/cut/app:1",
            "-o", str(bundle), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = bundle / "blobs/sha256" / f".{big.digest.split(':')[1]}.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not partial.exists()
                                           or partial.stat().st_size < 300_000) \
            and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the export ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert out == b""
    assert err.decode().splitlines() == [
        f"interrupted: kept 2 finished blobs ({human(image.config.size + small.size)}); "
        "run the same command again to continue"]
    assert not (bundle / "index.json").exists()
    proxy.clear_rules()
    done = subprocess.run(args, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entries = json.loads((bundle / "index.json").read_bytes())["manifests"]
    assert [e["digest"] for e in entries] == [image.digest]
    for blob in image.blobs:
        data = (bundle / "blobs/sha256" / blob.digest.split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
    assert proxy.count("GET", small.digest) == 1  # kept, not fetched again


def _manifest_events(stderr: str) -> dict[str, tuple[int, int]]:
    """digest -> (done, total) of the ``manifest`` JSON events; each digest once."""
    events = [json.loads(line) for line in stderr.splitlines()]
    manifests = [e for e in events if e["kind"] == "manifest"]
    assert {e["state"] for e in manifests} == {"done"}
    found = [(e["name"], e["done"], e["total"]) for e in manifests]
    names = [name for name, _, _ in found]
    assert len(names) == len(set(names)), names
    return {name: (done, total) for name, done, total in found}


def test_every_manifest_written_or_pushed_is_one_manifest_event(seeded_registry: Seeded,
                                                               tmp_path):
    """Directory and archive, export and import: one ``manifest`` event per manifest, its
    ``done`` and ``total`` both the manifest's size."""
    registry, seeded = seeded_registry
    multi = seeded.get("multi/arch", "1")
    refs = [f"{registry.host}/base/os:1", f"{registry.host}/multi/arch:1"]
    expected = {seeded.get("base/os", "1").digest: len(seeded.get("base/os", "1").manifest_bytes),
                multi.digest: len(multi.manifest_bytes)}
    expected.update({child.digest: len(child.manifest_bytes) for child in multi.item.children})
    want = {digest: (size, size) for digest, size in expected.items()}
    for out in (tmp_path / "b", tmp_path / "b.tar"):
        result = run_cli("export", *refs, "-o", str(out), "--progress", "json")
        assert result.exit_code == 0, result.stderr
        assert _manifest_events(result.stderr) == want
    for index, bundle in enumerate((tmp_path / "b", tmp_path / "b.tar")):
        result = run_cli("import", str(bundle), "--to", f"{registry.host}/events{index}",
                         "--progress", "json")
        assert result.exit_code == 0, result.stderr
        assert _manifest_events(result.stderr) == want


def test_a_no_op_export_leaves_index_json_untouched(seeded_registry: Seeded, tmp_path):
    registry, _ = seeded_registry
    out = tmp_path / "b"
    ref = f"{registry.host}/base/os:1"
    assert run_cli("export", ref, "-o", str(out), "-q").exit_code == 0
    before = (out / "index.json").stat()
    again = run_cli("export", ref, "-o", str(out), "-q")
    assert again.exit_code == 0, again.stderr
    after = (out / "index.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    other = run_cli("export", f"{registry.host}/base/os:2", "-o", str(out), "-q")
    assert other.exit_code == 0
    assert (out / "index.json").stat().st_ino != before.st_ino  # a new entry: replaced
    names = [m["annotations"]["org.opencontainers.image.ref.name"]
             for m in json.loads((out / "index.json").read_text())["manifests"]]
    assert names == [ref, f"{registry.host}/base/os:2"]


@pytest.mark.parametrize("command", ["export", "import"])
@pytest.mark.parametrize(("flags", "message"), [
    (["--json"], "--json goes with --dry-run"),
    (["-q", "--progress", "json"], "-q/--quiet shows no progress; it contradicts --progress json"),
    (["--quiet", "--progress", "plain"], "contradicts --progress plain"),
])
def test_contradictory_output_options_are_usage_errors(command: str, flags: list[str],
                                                       message: str, tmp_path):
    target = (["127.0.0.1:1/a:1", "-o", str(tmp_path / "b")] if command == "export"
              else [str(tmp_path / "missing"), "--to", "127.0.0.1:1/m"])
    result = run_cli(command, *target, *flags)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "b").exists()


def test_quiet_with_progress_none_is_accepted(seeded_registry: Seeded, tmp_path):
    registry, _ = seeded_registry
    result = run_cli("export", f"{registry.host}/base/os:1", "-o", str(tmp_path / "b"), "-q",
                     "--progress", "none")
    assert result.exit_code == 0 and result.stderr == ""


def test_plain_lines_give_big_blob_sizes_in_binary_units(capsys) -> None:
    from bundler.cli.reporters import make_reporter
    from bundler.events import Event, Tally

    plain = make_reporter("plain", Tally())
    digest = "sha256:" + "c9e7527b26c4" + "0" * 52
    plain(Event("blob", digest, "done", 9 << 20, 9 << 20))
    plain(Event("blob", "sha256:" + "1" * 64, "done", 1 << 20, 1 << 20))  # small: no line
    assert capsys.readouterr().err == "blob sha256:c9e7527b26c4: 9.0 MiB\n"


def test_plain_import_names_the_destination_of_done_and_present_images(
        seeded_registry: Seeded, tmp_path):
    registry, seeded = seeded_registry
    ref = f"{registry.host}/base/os:1"
    export_bundle([ref], tmp_path / "b")
    dest = f"{registry.host}/plain-{tmp_path.name}/base/os:1@{seeded.get('base/os', '1').digest}"
    first = run_cli("import", str(tmp_path / "b"), "--to", f"{registry.host}/plain-{tmp_path.name}")
    again = run_cli("import", str(tmp_path / "b"), "--to", f"{registry.host}/plain-{tmp_path.name}")
    assert first.exit_code == 0 and again.exit_code == 0, first.stderr + again.stderr
    assert first.stderr.splitlines()[-1] == f"image {ref} -> {dest}: done"
    assert again.stderr.splitlines()[-1] == f"image {ref} -> {dest}: already there"


def test_json_import_starts_each_image_to_push_and_skips_each_present_one(
        seeded_registry: Seeded, tmp_path):
    registry, seeded = seeded_registry
    refs = [f"{registry.host}/base/os:1", f"{registry.host}/apps/api:1.0"]
    export_bundle(refs[:1], tmp_path / "small")
    export_bundle(refs, tmp_path / "b")
    to = f"{registry.host}/starts-{tmp_path.name}"
    assert run_cli("import", str(tmp_path / "small"), "--to", to, "-q").exit_code == 0
    result = run_cli("import", str(tmp_path / "b"), "--to", to, "--progress", "json")
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    images = [(e["name"], e["state"], e["detail"]) for e in events if e["kind"] == "image"]
    os1, api = seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")
    assert images == [
        (refs[0], "skipped", f"{to}/base/os:1@{os1.digest}"),
        (refs[1], "start", f"{to}/apps/api:1.0@{api.digest}"),
        (refs[1], "done", f"{to}/apps/api:1.0@{api.digest}"),
    ]
    plan = next(i for i, e in enumerate(events) if e["kind"] == "plan")
    first_image = next(i for i, e in enumerate(events) if e["kind"] == "image")
    assert plan < first_image


def test_sigterm_is_an_interrupt_exit_143_and_an_archive_leaves_nothing(
        registry: LocalRegistry, fault_proxy, tmp_path):
    small, big = random_layer(63, 200_000), random_layer(64, 3 << 20)
    image = make_image([small, big])
    push(registry, "term/app", image, tag="1")
    proxy = fault_proxy(registry.url)
    proxy.slow(big.digest, 300_000, times=1)  # ~10 s: a loaded host still sees it mid-way
    out = tmp_path / "out"
    out.mkdir()
    archive = out / "bundle.tar.zst"
    args = [sys.executable, "-m", "bundler.cli", "export", f"{proxy.host}/term/app:1",
            "-o", str(archive), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    def written() -> int:
        return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and written() < 500_000:  # the slow layer is coming
        time.sleep(0.02)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert stdout == b""
    assert err.decode().splitlines() == [
        f"interrupted: the archive {archive} was not written and nothing was kept; run the "
        "same command again to start over"]
    assert sorted(p.name for p in out.iterdir()) == []  # no partial archive, no spool
