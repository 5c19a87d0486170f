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
from bundler.cli import human, main
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
    export_bundle(names, full)
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
    lines = [f"dry run: would import 3 images from {full}"]
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
    from bundler.progress import Event, Tally
    from bundler.reporting import make_reporter

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
    proxy.slow(big.digest, 1_000_000, times=1)
    bundle = tmp_path / "bundle"
    args = [sys.executable, "-m", "bundler.cli", "export", f"{proxy.host}/cut/app:1",
            "-o", str(bundle), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = bundle / "blobs/sha256" / f".{big.digest.split(':')[1]}.partial"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not partial.exists()
                                           or partial.stat().st_size < 300_000):
        time.sleep(0.02)
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
