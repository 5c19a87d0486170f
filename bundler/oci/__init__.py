"""The OCI content model, with no I/O: references, digests and the verifying reader,
descriptors, manifests, indexes, media types and platforms, the content graph of an
image, and the size limits a bundle's readers and writers share.

Nothing here opens a file or a connection; every layer above builds on it.

Spec: image-spec ``descriptor.md``, ``manifest.md``, ``image-index.md``,
``image-layout.md``; distribution ``reference`` grammar.
"""
