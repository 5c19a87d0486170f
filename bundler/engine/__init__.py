"""The transfer engine: planning (the images and blobs to move, keyed by digest), the
concurrent runner, naming (``--to``, ``--mapping``), export into a bundle, import from a
directory or archive bundle, dry runs, and offline checks of archives.

Uses :mod:`bundler.stores` and :mod:`bundler.registry`; the command line and the library
facade (:mod:`bundler.bundle`) sit above it.
"""
