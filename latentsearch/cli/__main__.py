"""`python -m latentsearch.cli`: the same as the `latentsearch` console script."""

from latentsearch.cli import main

if __name__ == "__main__":
    main()
