"""The distribution-spec client: one ``httpx.Client`` per registry (:mod:`.transport`:
ping, retries, ``Retry-After``, errors), authentication (:mod:`.auth`, Basic and bearer
tokens), where credentials and TLS trust come from (:mod:`.credentials`, :mod:`.tls`,
:mod:`.authfile` for login/logout), pushing blobs (:mod:`.uploads`, with the resumable
:mod:`.journal`), the client itself (:mod:`.client`) and non-distributable layers fetched
from their URLs (:mod:`.foreign`).

Depends only on :mod:`bundler.oci` and the top-level errors and events.

Spec: distribution-spec; docker token authentication.
"""
