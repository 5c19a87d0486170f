"""Stores: where content lives. A registry and an OCI layout offer the same verbs.

Every store speaks the distribution/image-spec vocabulary with the same method names:
``has_blob``, ``open_blob``, ``write_blob``/``put_blob``, ``get_manifest``/``load_manifest``,
``put_manifest``/``put_bytes``, ``read_index``/``list_tags``. The registry side is
:class:`bundler.registry.RegistryClient`; the layout side is
:class:`bundler.stores.layout.LayoutStore`.
"""

from __future__ import annotations

from .layout import LayoutStore

__all__ = ["LayoutStore"]
