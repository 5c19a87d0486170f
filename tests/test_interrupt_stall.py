"""Ctrl-C while a registry stalls on a manifest: export, export --dry-run, mirror and
copy end at once with exit 130 and the documented line, instead of waiting for the
stalled requests to time out."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bundler.sandbox import FaultProxy, LocalRegistry, SeededSet


def _interrupt(command: list[str], proxy: FaultProxy, path: str) -> tuple[int, str, float]:
    process = subprocess.Popen([sys.executable, "-m", "bundler", *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while proxy.count("GET", path) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.count("GET", path) > 0, f"{command[0]} never asked for {path}"
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"{command[0]}: Ctrl-C did not end it") from None
    return process.returncode, err, time.monotonic() - sent


def test_ctrl_c_while_a_manifest_stalls_ends_every_command_at_once(
        seeded_registry: tuple[LocalRegistry, SeededSet], registry: LocalRegistry,
        fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    reg, seeded = seeded_registry
    proxy = fault_proxy(reg.url)
    # every manifest GET of the multi-arch repository hangs for a minute
    proxy.add_rule("stall", r"/v2/apps/web/manifests/", method="GET", times=None, nbytes=0,
                   seconds=60)
    source = f"{proxy.host}/apps/web:1"
    images = tmp_path / "images.txt"
    images.write_text(f"{source}\n")
    runs = {
        "export": (["export", source, "-o", str(tmp_path / "b")],
                   "interrupted: kept 0 finished blobs (0 B); run the same command again "
                   "to continue\n"),
        "export --dry-run": (["export", source, "-o", str(tmp_path / "c"), "--dry-run"],
                             "interrupted: nothing was moved\n"),
        "mirror": (["mirror", "-f", str(images), "--to", f"{registry.host}/m"],
                   "interrupted: 0 finished blobs (0 B) are in the registry; run the same "
                   "command again to continue\n"),
        "mirror --dry-run": (["mirror", "-f", str(images), "--to", f"{registry.host}/m",
                              "--dry-run"], "interrupted: nothing was moved\n"),
        "copy": (["copy", f"docker://{source}", f"oci:{tmp_path / 'd'}"],
                 "interrupted: kept 0 finished blobs (0 B); run the same command again "
                 "to continue\n"),
    }
    for name, (command, said) in runs.items():
        code, err, took = _interrupt(command, proxy, "/manifests/")
        assert (code, err) == (130, said), name
        assert took < 10, f"{name} took {took:.1f} s after Ctrl-C"
        proxy.requests.clear()
    assert not (tmp_path / "b" / "index.json").exists()
