"""`python -m latentsearch.cli`: the same as the `latentsearch` console script."""

from latentsearch.cli import main

main()
