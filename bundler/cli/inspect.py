"""``bundler inspect LOCATION``: one image of a registry (``REFERENCE`` or
``docker://REFERENCE``), a layout (``oci:DIR[:NAME]``) or an archive
(``oci-archive:FILE[:NAME]``).

Exit status: 0 shown, 1 an error (the registry refused, no such image, ``--config`` of
an index), 2 bad usage (a location that does not parse, ``--raw`` with ``--json``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import bundle as api
from ..errors import BundlerError, InvalidReferenceError, LocationError
from ..oci.reference import parse_location
from ..termsafe import escape
from .options import side_options, transport_options
from .summary import human, stdout_may_close

__all__ = ["inspect_cmd"]


@click.command("inspect")
@click.argument("reference", metavar="LOCATION")
@click.option("--raw", is_flag=True,
              help="The manifest's exact bytes (to a terminal: control characters shown "
                   "escaped).")
@click.option("--config", "config", is_flag=True,
              help="The image's config blob (with --raw: its exact bytes).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@transport_options("src")
def inspect_cmd(reference: str, raw: bool, config: bool, as_json: bool, **kw: Any) -> None:
    """Show an image: digest, media type, the platforms of an index, created,
    architecture/os, layers with sizes, labels.

    LOCATION is a reference (or docker://REFERENCE), oci:DIR[:NAME] or
    oci-archive:FILE[:NAME].

    \b
    Examples:
      bundler inspect docker.io/library/alpine:3.20
      bundler inspect registry.internal:5000/app@sha256:... --raw > manifest.json
      bundler inspect registry.internal:5000/app:1.0 --config --json
      bundler inspect oci:./bundle:registry.internal:5000/app:1.0
      bundler inspect oci-archive:bundle.tar.zst:registry.internal:5000/app:1.0 --raw
    """
    if raw and as_json:
        raise click.UsageError("--raw prints the exact bytes; it contradicts --json")
    try:
        location = parse_location(reference)
        if location.transport == "docker-archive":
            raise LocationError(reference, "docker-archive: cannot be inspected yet; "
                                           "expected docker://REFERENCE, oci:DIR[:NAME] or "
                                           "oci-archive:FILE[:NAME]")
    except InvalidReferenceError as exc:  # LocationError too
        raise click.UsageError(escape(exc)) from exc
    ref = location.reference or location
    options = side_options("src", kw)
    try:
        info = api.inspect_location(reference, options=options, config=True)
    except InvalidReferenceError as exc:  # a layout with several images and no :NAME
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # click would say "Aborted!" and exit 1
        click.echo("interrupted", err=True)
        sys.exit(130)
    if config and info.config_raw is None:
        click.echo(f"error: {escape(ref)} is an index ({escape(info.media_type)}): it has "
                   "no config; inspect one of its manifests by digest", err=True)
        sys.exit(1)
    with stdout_may_close():
        if raw:
            _write_raw(info.config_raw if config else info.raw)
        elif config:
            doc = json.loads(info.config_raw or b"null") if _is_json(info.config_raw) else None
            click.echo(json.dumps(doc, indent=2) if doc is not None
                       else escape((info.config_raw or b"").decode("utf-8", "replace")))
        elif as_json:
            click.echo(json.dumps(info.to_json(), indent=2))
        else:
            _print_info(info)


def _is_json(data: bytes | None) -> bool:
    try:
        json.loads(data or b"")
    except (ValueError, RecursionError):  # nested too deeply: shown as text
        return False
    return True


def _write_raw(data: bytes | None) -> None:
    """The exact bytes to a pipe or file; escaped, line by line, to a terminal."""
    data = data or b""
    if sys.stdout.isatty():
        for line in data.decode("utf-8", "replace").split("\n"):
            click.echo(escape(line))
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _print_info(info: api.ImageInfo) -> None:
    rows = [("Name", info.name), ("Tag", info.tag or "-"), ("Digest", str(info.digest)),
            ("MediaType", info.media_type)]
    if info.config_raw is not None:
        rows += [("Created", info.created or "-"), ("Architecture", info.architecture or "-"),
                 ("Os", info.os or "-")]
        if info.variant:
            rows.append(("Variant", info.variant))
    for key, value in rows:
        click.echo(f"{key + ':':<14}{escape(value)}")
    if info.platforms:
        click.echo("Platforms:")
        for child in info.platforms:
            click.echo(f"  {escape(child['platform']) or '-':<20} {child['digest']}  "
                       f"{human(child['size'])}")
    if info.layers:
        click.echo("Layers:")
        for layer in info.layers:
            click.echo(f"  {layer['digest']}  {human(layer['size'])}")
    if info.labels:
        click.echo("Labels:")
        for key, value in sorted(info.labels.items()):
            click.echo(f"  {escape(key)}={escape(value)}")
