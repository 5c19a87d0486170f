"""``bundler list-tags REGISTRY/REPOSITORY``: a repository's tags, one a line.

Exit status: 0 listed, 1 an error (the registry refused, no such repository), 2 bad
usage (a repository that does not parse: before any request).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import bundle as api
from ..errors import BundlerError, InvalidReferenceError
from ..oci.reference import Reference
from ..termsafe import escape
from .options import side_options, transport_options
from .summary import stdout_may_close

__all__ = ["list_tags_cmd"]


@click.command("list-tags")
@click.argument("repository", metavar="REGISTRY/REPOSITORY")
@click.option("--json", "as_json", is_flag=True,
              help='{"repository": ..., "tags": [...]} instead of one tag a line.')
@transport_options("src")
def list_tags_cmd(repository: str, as_json: bool, **kw: Any) -> None:
    """List the tags of a repository (every page of the registry's tags list).

    \b
    Examples:
      bundler list-tags docker.io/library/alpine
      bundler list-tags registry.internal:5000/team-a/app --json
    """
    try:
        ref = Reference.parse(repository, default_tag=None)
    except InvalidReferenceError as exc:
        raise click.UsageError(escape(exc)) from exc
    if ref.tag is not None or ref.digest is not None:
        raise click.UsageError(f"{escape(repr(repository))}: give a repository without a "
                               "tag or digest")
    options = side_options("src", kw)
    try:
        tags = api.list_repository_tags(ref, options=options)
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # click would say "Aborted!" and exit 1
        click.echo("interrupted", err=True)
        sys.exit(130)
    with stdout_may_close():
        if as_json:
            click.echo(json.dumps({"repository": ref.name, "tags": tags}, indent=2))
        else:
            for tag in tags:
                click.echo(escape(tag))
