"""What a hostile or merely unlucky user tried against the trust fixes: each case once
broke (a traceback, a wrong exit status, a misleading message)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler import export_bundle
from bundler.cli import main
from bundler.sandbox import LocalRegistry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]
GUARD_S = 120  # a guard against a hang only
DEEP = "[" * 100_000 + "]" * 100_000


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def closed_stdout_run(*args: str) -> tuple[int, str]:
    """Run bundler with a stdout pipe whose reader is gone (``| head -1``)."""
    process = subprocess.Popen([sys.executable, "-m", "bundler.cli", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    return process.wait(timeout=GUARD_S), err


def test_a_dry_run_whose_reader_stopped_reading_exits_0(
        seeded_registry: Seeded, registry: LocalRegistry, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    entry = seeded.get("base/os", "1")
    export_bundle([entry.reference], tmp_path / "bundle")
    assert closed_stdout_run("import", str(tmp_path / "bundle"), "--to",
                             f"{registry.host}/m", "--dry-run") == (0, "")
    assert closed_stdout_run("export", entry.reference, "-o", str(tmp_path / "new"),
                             "--dry-run") == (0, "")


@pytest.mark.parametrize("host", ["x:abc", "[::1", "reg\x1b[2J:5000"])
def test_login_to_a_malformed_registry_name_is_a_usage_error(host: str,
                                                              tmp_path: Path) -> None:
    result = invoke("login", host, "-u", "a", "-p", "b", "--authfile",
                    str(tmp_path / "auth.json"))
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "is not a registry" in result.output
    assert "\x1b" not in result.output
    assert not (tmp_path / "auth.json").exists()
