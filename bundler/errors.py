"""The exception tree of bundler.

Every error raised on purpose by the library derives from :class:`BundlerError`, so a
caller can catch one class. Library errors (httpx, OSError, zstandard) are wrapped with
``raise ... from exc``. No error message ever contains a password or a token.

::

    BundlerError
    +-- InvalidReferenceError       a reference or location that does not parse
    |   +-- LocationError           a copy location that names no single image (exit 2)
    +-- ManifestError               bytes that are not a manifest/index we understand
    +-- IntegrityError              content that does not match its descriptor
    |   +-- DigestMismatchError     sha256 (or other algorithm) differs
    |   +-- SizeMismatchError       more or fewer bytes than the descriptor says
    +-- RegistryError               the registry answered with an error (status, codes)
    |   +-- AuthenticationError     401: bad or missing credentials, token refused
    |   +-- AccessDeniedError       403: authenticated but not allowed
    |   +-- NotFoundError           404: manifest, blob or repository unknown
    |   +-- RateLimitError          429: too many requests, even after retries
    |   +-- TransportError          no HTTP answer: connection refused, TLS, timeout
    +-- ForeignLayerError           a non-distributable layer no source served
    +-- BundleError                 a bundle that is missing, malformed or incomplete
    |   +-- UnsafeArchiveError      an archive member that must not be extracted/read
    |   +-- UnsafeBundleError       a file of a bundle directory that is no regular file
    |   |                           inside it (symlink, FIFO, device, socket)
    |   +-- BundleLockedError       another bundler is writing the bundle (--no-wait)
    |   +-- StaleReceiptError       a full bundle's receipt of another index.json (ignored)
    +-- ReceiptError                a bundle receipt that is not one, of another version,
    |                               malformed or too large
    +-- MappingError                import naming: bad --to / --mapping, no repository,
    |                               two images with one destination (CLI: exit 2)
    +-- TransferError               one image failed; names the image, wraps the cause
    +-- PartialFailureError         --keep-going: some images failed, the others were done
    +-- CredentialsError            an auth file, credential helper or TLS file unusable
    +-- Cancelled                   the run was stopped (Ctrl-C, or another task failed)
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "CredentialsError",
    "AccessDeniedError",
    "AuthenticationError",
    "BundleError",
    "BundleLockedError",
    "BundlerError",
    "DigestMismatchError",
    "ForeignLayerError",
    "IntegrityError",
    "InvalidReferenceError",
    "LocationError",
    "ManifestError",
    "MappingError",
    "NotFoundError",
    "PartialFailureError",
    "ReceiptError",
    "RateLimitError",
    "RegistryError",
    "SizeMismatchError",
    "StaleReceiptError",
    "TransferError",
    "TransportError",
    "UnsafeArchiveError",
    "UnsafeBundleError",
]


class BundlerError(Exception):
    """Root of every error bundler raises on purpose."""


class InvalidReferenceError(BundlerError, ValueError):
    """A reference, digest or location string that does not follow its grammar.

    Attributes:
        text: the input exactly as given.
        reason: what is wrong with it.
        where: where the input came from (``FILE:LINE``), or "".
    """

    def __init__(self, text: str, reason: str, *, where: str = "") -> None:
        at = f"{where}: " if where else ""
        super().__init__(f"{at}invalid reference {text!r}: {reason}")
        self.text = text
        self.reason = reason
        self.where = where


class LocationError(InvalidReferenceError):
    """A location of ``bundler copy`` that cannot be used: an unknown transport, a
    layout holding several images and no ``:REFERENCE``, a name the layout does not
    hold, a destination equal to the source. Found before anything moves.

    Attributes:
        text: the location as given.
        reason: what is wrong, and the accepted forms.
    """

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(text, reason)
        self.args = (f"location {text!r}: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


class ManifestError(BundlerError):
    """Bytes that do not parse as a manifest or index of a supported media type."""


class IntegrityError(BundlerError):
    """Content that does not match its descriptor.

    Attributes:
        digest: the expected digest (str).
        where: a human name for the content (a URL without query, or a file path).
    """

    def __init__(self, message: str, *, digest: str, where: str = "") -> None:
        super().__init__(message)
        self.digest = digest
        self.where = where


class DigestMismatchError(IntegrityError):
    """The content hashed to another digest than expected."""

    def __init__(self, *, expected: str, actual: str, where: str = "") -> None:
        at = f" ({where})" if where else ""
        super().__init__(
            f"digest mismatch{at}: expected {expected}, got {actual}", digest=expected, where=where
        )
        self.expected = expected
        self.actual = actual


class SizeMismatchError(IntegrityError):
    """The content has more or fewer bytes than expected."""

    def __init__(self, *, digest: str, expected: int, actual: int, where: str = "") -> None:
        at = f" ({where})" if where else ""
        relation = "at least" if actual > expected else "only"
        super().__init__(
            f"size mismatch for {digest}{at}: expected {expected} bytes, got {relation} {actual}",
            digest=digest,
            where=where,
        )
        self.expected = expected
        self.actual = actual


class RegistryError(BundlerError):
    """An error answer of a registry (distribution-spec, "Error Codes").

    Attributes:
        status: HTTP status code, or None when there was no HTTP answer.
        codes: the ``errors[].code`` values of the error body, e.g. ``["MANIFEST_UNKNOWN"]``.
        url: the request URL without query string (never carries secrets).
        registry: the registry host[:port].
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        codes: tuple[str, ...] = (),
        url: str = "",
        registry: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)
        self.url = url
        self.registry = registry


class AuthenticationError(RegistryError):
    """401 Unauthorized: credentials missing or refused, or the token service refused."""


class AccessDeniedError(RegistryError):
    """403 Forbidden: the credentials are valid but lack the permission."""


class NotFoundError(RegistryError):
    """404: the manifest, tag, blob or repository does not exist."""


class RateLimitError(RegistryError):
    """429 Too Many Requests that persisted past the retries."""


class TransportError(RegistryError):
    """No HTTP answer: connection refused or reset, TLS failure, timeout."""


class BundleError(BundlerError):
    """A bundle (OCI layout directory or archive) that is missing, malformed or incomplete."""


class UnsafeArchiveError(BundleError):
    """An archive member that could escape the destination or is not part of a layout."""


class UnsafeBundleError(BundleError):
    """A file of a bundle directory that is not a regular file inside it: a symbolic
    link (anywhere under the root), a FIFO, a device, a socket or a directory where a
    file belongs. Nothing of it is read."""


class BundleLockedError(BundleError):
    """Another process is writing the bundle (its lock is held) and waiting was not
    wanted (``--no-wait``).

    Attributes:
        pid: the process id the lock file names, or None if unknown.
    """

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class MappingError(BundlerError):
    """A destination that cannot be worked out: bad ``--to``, ``--mapping`` line, or an
    image whose recorded name has no repository."""


class TransferError(BundlerError):
    """One image could not be exported or imported.

    Attributes:
        image: the reference of the image, as the user knows it.
        cause: the underlying :class:`BundlerError`.
    """

    def __init__(self, image: str, cause: BaseException) -> None:
        super().__init__(f"{image}: {cause}")
        self.image = image
        self.cause = cause


class PartialFailureError(BundlerError):
    """Some images failed while the others were exported or imported (``keep_going``).

    Attributes:
        failures: one :class:`TransferError` per failed image, in the order asked.
        result: what was achieved for the other images (an ``ExportResult`` or
            ``ImportResult``).
    """

    def __init__(self, failures: list[TransferError], result: object) -> None:
        names = ", ".join(f.image for f in failures)
        super().__init__(f"{len(failures)} image{'s' if len(failures) != 1 else ''} "
                         f"failed: {names}")
        self.failures = list(failures)
        self.result = result


class CredentialsError(BundlerError):
    """An auth file, credential helper or TLS certificate directory that cannot be used."""


class Cancelled(BundlerError):
    """The run was stopped (Ctrl-C, or another task failed) before this task finished."""


class ForeignLayerError(BundlerError):
    """A non-distributable layer that no source served (registry and every URL).

    Attributes:
        digest: the layer's digest.
        attempts: one line per source tried: what it is and why it failed.
    """

    def __init__(self, digest: object, attempts: list[str]) -> None:
        self.digest = digest
        self.attempts = attempts
        super().__init__(f"non-distributable layer {digest} could not be fetched: "
                         + "; ".join(attempts))


class ReceiptError(BundlerError):
    """A receipt that cannot be used: not a receipt, another format version, a missing
    or ill-typed field, a bad digest, over :data:`~bundler.oci.limits.RECEIPT_LIMIT`.
    The message names the file."""


class StaleReceiptError(BundleError):
    """A full bundle's inside receipt names another ``index.json`` than the bundle's
    (``index.json`` was changed after the export): ignored, with a warning."""
