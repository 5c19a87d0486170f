"""The ``bundler`` command line: click commands (:mod:`.main`; ``copy`` in :mod:`.copy`,
``mirror`` in :mod:`.mirror`, ``serve`` in :mod:`.serve`), the options they share
(:mod:`.options`), progress reporters (:mod:`.reporters`: bar, plain, JSON) and the
summaries and error lines (:mod:`.summary`). The top layer: it calls the library
facade, the engine and the server, never the other way round.
"""

from .main import main

__all__ = ["main"]
