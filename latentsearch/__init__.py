"""latentsearch: retrieval that understands what a text implies.

Top-level folders of the repository are subpackages: `latentsearch.ingest` (readers, chunking,
processors, bulk writer), `latentsearch.query` (DSL builders, search), `latentsearch.models`
(model registry and encoders), `latentsearch.mappings` (index definitions per backend),
`latentsearch.onnx_export` (export and serving). The core here holds config, backends and the CLI.
"""

from latentsearch.config import EntitySchema, LatentEntityType, Settings, load_settings

__version__ = "0.1.0"
__all__ = ["EntitySchema", "LatentEntityType", "Settings", "__version__", "load_settings"]
