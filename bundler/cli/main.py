"""The ``bundler`` command line: thin click commands over the library facade.

Exit status: 0 success; 1 an error (message on stderr, naming the image); 2 bad usage
(click's ``Usage: ...`` lines, then ``Error: ...``): an unknown option or bad value, a bad
reference, images file, ``--to`` or ``--mapping``, found before any network use where the
command line alone tells; 130 interrupted (Ctrl-C), after a one-line summary of what
was kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import bundle as api
from ..engine.naming import check_to, parse_mapping
from ..engine.registry_receipt import receipt_location
from ..errors import BundlerError, InvalidReferenceError
from ..events import Tally
from ..oci.reference import Reference
from ..registry.authfile import default_authfile, login, logout
from ..registry.credentials import Credentials, normalize_key
from ..registry.journal import UploadJournal
from ..stores.volumes import find_volumes
from ..termsafe import escape
from .copy import copy_cmd
from .export import export_cmd
from .inspect import inspect_cmd
from .list_tags import list_tags_cmd
from .listing import listed_json, with_referrers
from .merge import merge_cmd
from .mirror import mirror_cmd
from .options import (
    MIN_CHUNK_SIZE,
    check_output_options,
    check_shared_blob_dir,
    once,
    parse_bool,
    print_dry_run,
    progress_options,
    shared_blob_dir_option,
    side_options,
    size_option,
    transport_options,
    zstd_ratio_option,
)
from .reporters import make_reporter
from .serve import serve_cmd
from .summary import (
    human,
    import_summary,
    plural,
    run,
    stdout_may_close,
)


class _StderrHandler(logging.Handler):
    """Writes log records to the current stderr (``--debug``)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(escape(self.format(record)), err=True)


def _configure_debug(debug: bool) -> None:
    logger = logging.getLogger("bundler")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if debug:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("debug: %(name)s: %(message)s"))
        logger.addHandler(handler)
    else:  # warnings of the library (a credential helper missing) as "warning: ..."
        handler = _StderrHandler(logging.WARNING)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.NOTSET)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bundler")
@click.option("--debug", is_flag=True,
              help="Log every HTTP request (method, URL, status) and credential source to "
                   "stderr; never secrets.")
def main(debug: bool) -> None:
    """Move container images across an air gap: export from registries into one bundle,
    import the bundle into a disconnected registry with every digest preserved."""
    _configure_debug(debug)


main.add_command(export_cmd)
main.add_command(copy_cmd)
main.add_command(mirror_cmd)
main.add_command(list_tags_cmd)
main.add_command(inspect_cmd)
main.add_command(serve_cmd)
main.add_command(merge_cmd)


@main.command("import")
@click.argument("bundle", type=click.Path())
@click.option("--to", "to", metavar="REGISTRY[/PREFIX]", callback=once,
              multiple=True, help="Destination registry and repository prefix.")
@click.option("--mapping", type=click.Path(dir_okay=False), callback=once, multiple=True,
              help="File of SOURCE=DESTINATION lines (oc image mirror style).")
@click.option("--chunk-size", default="64MiB", show_default=True,
              callback=size_option(MIN_CHUNK_SIZE),
              help="Blobs larger than this are uploaded in PATCH chunks of this size "
                   "(at least 1KiB).")
@click.option("--base", "base", metavar="BUNDLE", callback=once, multiple=True,
              help="The base bundle of a differential bundle (a directory or a .tar): "
                   "omitted blobs the destination lacks are uploaded from it.")
@click.option("--receipt-repository", metavar="REGISTRY/REPOSITORY", callback=once,
              multiple=True,
              help="Where the registry receipts live (default: the --to prefix's "
                   "bundler-receipts repository).")
@click.option("--no-receipt", is_flag=True,
              help="Do not push the registry receipt of this import.")
@shared_blob_dir_option
@zstd_ratio_option
@transport_options("dest")
@progress_options
def import_cmd(bundle: str, to: str | None, mapping: str | None, chunk_size: int, jobs: int,
               quiet: bool, progress: str, keep_going: bool, dry_run: bool, as_json: bool,
               shared_blob_dir: str | None, max_zstd_ratio: int, base: str | None,
               receipt_repository: str | None, no_receipt: bool, **kw: Any) -> None:
    """Push a bundle's images into a registry, preserving every digest.

    BUNDLE is a directory, a .tar or .tar.zst file, split volumes (base name or
    NAME.000), or - to read the archive from stdin (one pass, never unpacked).

    \b
    Examples:
      bundler import ./bundle --to registry.internal:5000/mirror
      bundler import ./bundle --mapping mapping.txt
      bundler import bundle.tar.zst --to registry.internal:5000/mirror
      cat bundle.tar.zst.* | bundler import - --to registry.internal:5000/mirror
      bundler import ./bundle --to registry.internal:5000/mirror --dry-run
      bundler import ./diff --base ./last-week --to registry.internal:5000/mirror

    A differential bundle (export --since) is checked before anything is pushed: every
    blob it omits must be in the destination, mountable there, or in --base. After
    every tag, the bundle's receipt is pushed to REGISTRY/PREFIX/bundler-receipts.
    """
    check_output_options(quiet, progress, dry_run, as_json)
    if (to is None) == (mapping is None):
        raise click.UsageError("give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE")
    check_shared_blob_dir(bundle, shared_blob_dir)
    try:  # checked before the bundle is opened
        if to is not None:
            check_to(to)
        pairs = parse_mapping(mapping) if mapping is not None else None
        receipt_location(to=to, mapping=pairs, override=receipt_repository)
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    if no_receipt and receipt_repository is not None:
        raise click.UsageError("--no-receipt pushes no receipt; --receipt-repository says "
                               "where to (give one of them)")
    options = side_options("dest", kw, chunk_size=chunk_size, journal=UploadJournal())
    if dry_run:
        print_dry_run(lambda: api.plan_import(bundle, to=to, mapping=pairs, options=options,
                                              jobs=jobs, shared_blob_dir=shared_blob_dir,
                                              base=base,
                                              receipt_repository=receipt_repository),
                      bundle, as_json)
        return
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)
    options = dataclasses.replace(options, reporter=reporter)  # shows long waits
    run(lambda stop: api.import_bundle(bundle, to=to, mapping=pairs, options=options,
                                       jobs=jobs, reporter=reporter, stop=stop,
                                       keep_going=keep_going,
                                       shared_blob_dir=shared_blob_dir,
                                       max_zstd_ratio=max_zstd_ratio, base=base,
                                       receipt_repository=receipt_repository,
                                       receipt=not no_receipt),
        tally, import_summary, reporter, importing=True)


R = TypeVar("R")


def _offline(action: Callable[[], R], interrupted: str) -> R:
    """Run a bundle reader (list, verify): exit 1 with ``error: ...`` on a
    :class:`BundlerError`, 130 with ``interrupted`` on Ctrl-C."""
    try:
        return action()
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(interrupted, err=True)
        sys.exit(130)


@main.command("list")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@shared_blob_dir_option
@zstd_ratio_option
def list_cmd(bundle: str, as_json: bool, shared_blob_dir: str | None,
             max_zstd_ratio: int) -> None:
    """Show the images of a bundle: reference, digest, media type, platforms, size.

    An image whose manifests cannot be read is named on stderr and the others are
    listed; the exit status is then 1."""
    check_shared_blob_dir(bundle, shared_blob_dir)
    listing = _offline(lambda: api.list_bundle(bundle, shared_blob_dir=shared_blob_dir,
                                               max_zstd_ratio=max_zstd_ratio),
                       "interrupted")
    with stdout_may_close():  # list | head: a reader may stop early
        _print_listing(listing, as_json)
    sys.exit(1 if listing.problems else 0)


def _print_listing(listing: api.BundleListing, as_json: bool) -> None:
    """The listing as a table and a totals line, or as JSON (``problems`` on stderr)."""
    if as_json:
        click.echo(json.dumps({
            "images": [listed_json(i) for i in listing.images],
            "uniqueBytes": listing.unique_bytes,
            "totalBytes": listing.total_bytes,
            "blobs": listing.blob_count,
            "problems": listing.problems,
            "bundleId": listing.bundle_id,
            "base": None if listing.base is None else {
                "bundleId": listing.base, "omittedBlobs": listing.omitted,
                "omittedBytes": listing.omitted_bytes},
        }, indent=2))
        return
    for problem in listing.problems:
        click.echo(f"problem: {escape(problem)}", err=True)
    rows = [("REFERENCE", "DIGEST", "MEDIA TYPE", "PLATFORMS", "SIZE")]
    for i, indent in with_referrers(listing.images):
        kind = i.media_type.rsplit("/", 1)[-1]
        rows.append((indent + (escape(i.name) or "(unnamed)"), i.digest.short, escape(kind),
                     (escape(",".join(i.platforms)) or "-") + (" (sparse)" if i.sparse else ""),
                     human(i.size)))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
    saved = listing.total_bytes - listing.unique_bytes
    referrers = sum(1 for _i, indent in with_referrers(listing.images) if indent)
    click.echo(f"{plural(len(listing.images), 'image')}, "
               + (f"{plural(referrers, 'referrer')}, " if referrers else "")
               + f"{plural(listing.blob_count, 'blob')}: "
               f"{human(listing.unique_bytes)} stored, {human(listing.total_bytes)} without "
               f"dedup ({human(saved)} saved)"
               + (f"; {plural(len(listing.problems), 'image')} unreadable (see above)"
                  if listing.problems else ""))
    if listing.base is not None:
        click.echo(f"differential: {plural(listing.omitted, 'blob')} "
                   f"({human(listing.omitted_bytes)}) left out, expected from base "
                   f"{listing.base}")


@main.command("verify")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--base", "base", metavar="BASE", type=click.Path(),
              help="A differential bundle: check that BASE (the bundle it was exported "
                   "since, or its receipt) provides every blob it leaves out.")
@shared_blob_dir_option
@zstd_ratio_option
def verify_cmd(bundle: str, as_json: bool, base: str | None, shared_blob_dir: str | None,
               max_zstd_ratio: int) -> None:
    """Check a bundle offline: every digest, size and reference. Exit 1 on problems.

    A differential bundle's blobs left to its base are listed as expected from it, not
    as problems; with --base, BASE is checked to hold them.

    \b
    Examples:
      bundler verify bundle.tar.zst
      bundler verify week2.tar.zst --base week1.tar.zst
    """
    check_shared_blob_dir(bundle, shared_blob_dir)
    if base is not None and not Path(base).exists() and not _volumes(base):
        raise click.UsageError(f"--base {escape(base)}: no such bundle or receipt")
    report = _offline(lambda: api.verify_bundle(bundle, shared_blob_dir=shared_blob_dir,
                                                max_zstd_ratio=max_zstd_ratio, base=base),
                      "interrupted: the bundle was not fully checked")
    with stdout_may_close():
        _print_report(report, bundle, as_json)
    sys.exit(0 if report.ok else 1)


def _volumes(path: str) -> bool:
    """Whether ``path`` names split volumes (``NAME.000``, ...)."""
    try:
        return find_volumes(Path(path)) is not None
    except BundlerError:
        return False


def _print_report(report: api.VerifyReport, bundle: str, as_json: bool) -> None:
    """The verify report: problems on stderr and a summary line, or JSON."""
    receipt = report.receipt
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "images": report.images, "blobs": report.blobs,
                               "bytes": report.bytes, "problems": report.problems,
                               "skipped": [str(d) for d in report.skipped],
                               "warnings": report.warnings,
                               "bundleId": receipt.bundle_id if receipt else None,
                               "base": receipt.base.bundle_id if receipt and receipt.base
                               else None,
                               "expected": [str(d) for d in report.expected],
                               "baseChecks": report.base}, indent=2))
    else:
        for warning in report.warnings:
            click.echo(f"warning: {escape(warning)}", err=True)
        for problem in report.problems:
            click.echo(f"problem: {escape(problem)}", err=True)
        state = "OK" if report.ok else plural(len(report.problems), "problem")
        skipped = (f", {plural(len(report.skipped), 'non-distributable layer')} not held "
                   "(skipped)"
                   if report.skipped else "")
        click.echo(f"{escape(bundle)}: {state}: {plural(report.images, 'image')}, "
                   f"{plural(report.blobs, 'blob')}, "
                   f"{human(report.bytes)} checked{skipped}")
        if receipt is not None and receipt.base is not None:
            click.echo(f"differential: {plural(len(report.expected), 'blob')} not held, "
                       f"expected from base {receipt.base.bundle_id}")
        for line in report.base:
            click.echo(f"base: {escape(line)}")


@main.command("login")
@click.argument("registry")
@click.option("-u", "--username", help="User name.")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--authfile", type=click.Path(dir_okay=False),
              help="Auth file to write (default: $REGISTRY_AUTH_FILE, else "
                   "$XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json).")
@click.option("--tls-verify", default="true", metavar="BOOL", help="Verify TLS certificates.")
@click.option("--cert-dir", type=click.Path(exists=True, file_okay=False),
              help="Directory of *.crt CAs and *.cert/*.key client pairs.")
def login_cmd(registry: str, username: str | None, password: str | None, password_stdin: bool,
              authfile: str | None, tls_verify: str, cert_dir: str | None) -> None:
    """Check credentials against REGISTRY[/NAMESPACE] and store them in an auth file.

    \b
    Examples:
      bundler login registry.internal:5000 -u admin --password-stdin < pass.txt
      bundler login quay.io/team -u robot --password-stdin --authfile ./auth.json
    """
    if password is not None and password_stdin:
        raise click.UsageError("--password and --password-stdin are mutually exclusive")
    host = normalize_key(registry).split("/", 1)[0]
    try:
        Reference.parse(f"{host}/x")
    except InvalidReferenceError:
        raise click.UsageError(f"{escape(repr(registry))} is not a registry "
                               "HOST[:PORT][/NAMESPACE]") from None
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    try:
        path = login(registry, Credentials(username, password), authfile=authfile,
                     tls_verify=parse_bool(tls_verify), cert_dir=Path(cert_dir) if cert_dir else None)
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    click.echo(f"Login Succeeded! (credentials stored in {escape(path)})")


@main.command("logout")
@click.argument("registry", required=False)
@click.option("-a", "--all", "all_", is_flag=True, help="Remove the entries of all registries.")
@click.option("--authfile", type=click.Path(dir_okay=False),
              help="Auth file to change (default as for login).")
def logout_cmd(registry: str | None, all_: bool, authfile: str | None) -> None:
    """Remove the stored credentials of REGISTRY[/NAMESPACE] (or of all with --all)."""
    if (registry is None) != all_:
        raise click.UsageError("give exactly one of REGISTRY or --all")
    try:
        gone = logout(None if all_ else registry, authfile=authfile)
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    if not gone:
        path = authfile or default_authfile()
        click.echo(f"No stored credentials to remove (in {escape(path)})")
        return
    click.echo(f"Removed login credentials for {escape(', '.join(gone))}")


if __name__ == "__main__":
    main()
