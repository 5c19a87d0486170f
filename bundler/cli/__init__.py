"""The ``bundler`` command line: click commands (:mod:`.main`), progress reporters
(:mod:`.reporters`: bar, plain, JSON) and the summaries and error lines (:mod:`.summary`).
The top layer: it calls the library facade and the engine, never the other way round.
``bundler copy`` (:mod:`.copy`) and ``bundler mirror`` (:mod:`.mirror`) are added to the
group here.
"""

from .copy import copy_cmd
from .main import main
from .mirror import mirror_cmd

main.add_command(mirror_cmd)
main.add_command(copy_cmd)

__all__ = ["main"]
