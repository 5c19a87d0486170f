"""Break-it findings on image sets and serve: hostile and odd inputs from the docs'
promises (exit 2 before any request, nothing from outside printed raw, pagination that
ends, ranges as RFC 9110 says)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from bundler.cli.main import main

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
