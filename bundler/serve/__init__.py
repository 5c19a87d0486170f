"""``bundler serve``: bundles served in place as a read-only registry (the pull side of
the distribution spec).

- :mod:`.index` builds the namespace (repositories, tags, manifests, blobs, referrers)
  from bundle directories and plain ``.tar`` files or volumes, named as import names;
- :mod:`.app` answers the HTTP requests (aiohttp), sending blobs with ``sendfile``;
- :mod:`.auth` checks htpasswd (bcrypt) Basic authentication;
- :mod:`.server` listens, logs, reads changed bundles again and stops on a signal.
"""

from .index import Namespace, build_namespace
from .server import Bundles, ServeConfig, serve

__all__ = ["Bundles", "Namespace", "ServeConfig", "build_namespace", "serve"]
