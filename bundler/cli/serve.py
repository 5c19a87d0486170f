"""``bundler serve BUNDLE...``: bundles served in place as a read-only registry.

Exit status: 0 stopped by SIGINT (Ctrl-C) or SIGTERM, 1 an error (a bundle that cannot
be served, an address that cannot be listened on, an unreadable certificate or htpasswd
file), 2 bad usage (found before anything is read), 130 interrupted while the bundles
were being read (before anything was served).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import signal
import ssl
import sys

import click

from ..engine.naming import parse_mapping
from ..errors import BundlerError, InvalidReferenceError, MappingError
from ..termsafe import escape

__all__ = ["serve_cmd"]


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5000`` for IPv6) -> (host, port)."""
    host, colon, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not _HOST.fullmatch(host) or not _PORT.fullmatch(port) \
            or int(port) > 65535:
        raise click.BadParameter(f"expected HOST:PORT (e.g. 127.0.0.1:5000), got "
                                 f"{escape(repr(value))}")
    return host, int(port)


#: A host name (RFC 1123 labels), an IPv4 address, or an IPv6 one (its brackets gone).
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
                   r"[A-Za-z0-9])?)*\.?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[A-Za-z0-9_.-]+)?")
_PORT = re.compile(r"[0-9]{1,5}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _say(line: str) -> None:
    click.echo(line, err=True)


def _log(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@click.command("serve")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(), metavar="BUNDLE...")
@click.option("--listen", default="127.0.0.1:5000", show_default=True, callback=_listen,
              metavar="HOST:PORT",
              help="Where to listen (port 0: any free port). Any address other than a "
                   "loopback one lets whoever reaches it pull every image of the bundles.")
@click.option("--prefix", metavar="PATH",
              help="Serve every image under this repository path (PATH/<source path>).")
@click.option("--mapping", type=click.Path(dir_okay=False),
              help="File of SOURCE=DESTINATION lines (as for import): serve only these "
                   "images, under the destinations' repositories and tags.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option("--htpasswd", type=click.Path(dir_okay=False),
              help="Require HTTP Basic authentication against this file of bcrypt hashes "
                   "(htpasswd -B).")
@click.option("-q", "--quiet", is_flag=True, help="No access log line per request.")
def serve_cmd(bundles: tuple[str, ...], listen: tuple[str, int], prefix: str | None,
              mapping: str | None, tls_cert: str | None, tls_key: str | None,
              htpasswd: str | None, quiet: bool) -> None:
    """Serve bundles in place as one read-only registry: no import, no copy.

    \b
    BUNDLE is a bundle directory, a plain .tar bundle, or its split volumes; several
    are served as one namespace. A .tar.zst bundle cannot be served in place: extract
    it (zstd -d) or export it as .tar. Images are served under their source
    repository paths (docker.io/library/alpine:3.20 as library/alpine:3.20), under
    --prefix, or as a --mapping file says. The bundles are read again when they
    change on disk (a re-export into them). Stop with Ctrl-C or SIGTERM.

    \b
    Examples:
      bundler serve ./bundle
      bundler serve bundle.tar more.tar --listen 127.0.0.1:5001 --prefix mirror
      bundler serve ./bundle --listen 0.0.0.0:5000 --tls-cert cert.pem --tls-key key.pem \\
          --htpasswd users.htpasswd
      skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/library/alpine:3.20 oci:out
    """
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give both --tls-cert and --tls-key, or neither")
    # the server (aiohttp, bcrypt) is imported here: the other commands do not pay for it
    from ..serve.auth import Htpasswd, read_htpasswd
    from ..serve.server import Bundles, ServeConfig, serve

    if prefix is not None and mapping is not None:
        raise click.UsageError("give --prefix or --mapping, not both")
    host, port = listen
    try:
        pairs = parse_mapping(mapping) if mapping is not None else None
    except MappingError as exc:
        raise click.UsageError(escape(exc)) from exc
    try:
        context = None
        if tls_cert is not None and tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(tls_cert, tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise BundlerError(f"cannot load the TLS certificate {tls_cert} and key "
                                   f"{tls_key}: {exc}") from None
        check_auth = Htpasswd(read_htpasswd(htpasswd)) if htpasswd is not None else None
        served = Bundles(bundles, prefix=prefix, mapping=pairs, say=_say)
    except KeyboardInterrupt:  # Ctrl-C while the bundles are read
        click.echo("interrupted: nothing was served", err=True)
        sys.exit(130)
    except (MappingError, InvalidReferenceError) as exc:
        raise click.UsageError(escape(exc)) from exc
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    if not _is_loopback(host):
        guard = "" if check_auth is not None else " (and no --htpasswd asks who they are)"
        _say(f"warning: listening on {escape(host)}, not a loopback address: anyone who can "
             f"reach it can pull every image of the bundles{guard}")
    namespace = served.namespace

    def ready(urls: list[str]) -> None:
        _say(f"serving {namespace.describe()} "
             f"from {len(bundles)} bundle{'s' if len(bundles) != 1 else ''} "
             f"on {', '.join(urls)} (Ctrl-C to stop)")

    config = ServeConfig(host=host, port=port, ssl_context=context, check_auth=check_auth,
                         log=None if quiet else _log)
    try:
        signum = asyncio.run(serve(served, config, on_ready=ready))
    except KeyboardInterrupt:  # before the signal handlers were in place
        served.namespace.close()
        _say("stopped (SIGINT)")
        return
    except BundlerError as exc:
        served.namespace.close()
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    _say(f"stopped ({signal.Signals(signum).name})")
