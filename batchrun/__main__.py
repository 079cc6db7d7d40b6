"""`python -m batchrun` is the same as the `batchrun` command."""

from .cli import main

main()
