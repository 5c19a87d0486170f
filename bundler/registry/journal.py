"""Upload sessions that outlive a run, so an interrupted import continues a large blob.

After each chunk of a chunked upload is acknowledged, the journal records the session's
upload URL under ``registry/repository@digest``; when the blob is complete the entry
goes. An import run again after a kill, a Ctrl-C or a lost link asks the registry where
that session stands (``GET`` on the upload URL: ``204`` with ``Range: 0-<last byte>``)
and sends only the rest. A session the registry no longer knows (expired, purged) is
dropped and the blob starts over.

The journal is one JSON file, mode 0600, replaced atomically:
``$BUNDLER_STATE_DIR/uploads.json``, else ``$XDG_STATE_HOME/bundler/uploads.json``, else
``~/.local/state/bundler/uploads.json``. Its URLs carry the registries' upload state
(no credentials: those are sent as headers).

Spec: distribution-spec "Pushing a blob in chunks", "Getting the upload status".
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = ["UploadJournal"]


def _unfinished_key(registry: str, repository: str) -> str:
    return f"unfinished:{registry}/{repository}"


def _default_path() -> Path:
    if os.environ.get("BUNDLER_STATE_DIR"):
        return Path(os.environ["BUNDLER_STATE_DIR"]) / "uploads.json"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "bundler" / "uploads.json"


class UploadJournal:
    """Where chunked uploads stood, kept across runs (thread-safe).

    Args:
        path: the journal file; None: the default location (module docstring).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else _default_path()
        self._lock = threading.Lock()

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError, RecursionError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) \
            else {}

    def _write(self, entries: dict[str, str]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".uploads.", suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump(entries, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            return  # a journal is a help, never a reason to fail an upload

    def get(self, key: str) -> str | None:
        """The upload URL recorded for ``key``, or None."""
        with self._lock:
            return self._read().get(key)

    def put(self, key: str, url: str) -> None:
        """Record the current upload URL of ``key``."""
        with self._lock:
            entries = self._read()
            entries[key] = url
            self._write(entries)

    def begin(self, registry: str, repository: str) -> None:
        """Record that a run is pushing into ``registry/repository``, which had no tag
        when it started: until :meth:`end`, a later run must not take the missing tag
        for a repository without blobs."""
        self.put(_unfinished_key(registry, repository), "")

    def unfinished(self, registry: str, repository: str) -> bool:
        """Whether a run that :meth:`begin` recorded for this repository did not end."""
        with self._lock:
            return _unfinished_key(registry, repository) in self._read()

    def end(self, repositories: Iterable[tuple[str, str]]) -> None:
        """Forget the :meth:`begin` records of ``(registry, repository)`` pairs: their
        run ended, and what it pushed is tagged."""
        keys = {_unfinished_key(r, repo) for r, repo in repositories}
        with self._lock:
            entries = self._read()
            if keys & entries.keys():
                self._write({k: v for k, v in entries.items() if k not in keys})

    def remove(self, key: str) -> None:
        """Forget ``key`` (its blob is complete, or its session is gone)."""
        with self._lock:
            entries = self._read()
            if entries.pop(key, None) is not None:
                self._write(entries)
