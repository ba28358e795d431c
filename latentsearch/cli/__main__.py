"""`python -m latentsearch.cli ...` runs the `latentsearch` command (handy where the venv's script shebang is stale)."""

from latentsearch.cli import main

if __name__ == "__main__":
    main()
