"""The embedded engine (LanceDB): the default backend when no cluster URL is configured."""

from latentsearch.backends.embedded.backend import EmbeddedBackend

__all__ = ["EmbeddedBackend"]
