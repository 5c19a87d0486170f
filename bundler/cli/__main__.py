"""``python -m bundler.cli``: the command line."""

from .main import main

main()
