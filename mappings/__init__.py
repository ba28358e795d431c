"""Index mappings, settings and (later) pipeline/connector JSON, generated per backend.

`generated/` holds the JSON written by `python -m latentsearch.mappings` for docker/ and cluster
admins who apply definitions by hand.
"""

from latentsearch.backends.es_dialect import elasticsearch_index_body, to_elasticsearch_mappings
from latentsearch.mappings.builder import (
    LEXICAL_FIELD,
    MENTION_DIMENSION,
    index_body,
    opensearch_index_body,
    schema_from_mapping,
)

__all__ = [
    "LEXICAL_FIELD",
    "MENTION_DIMENSION",
    "elasticsearch_index_body",
    "index_body",
    "opensearch_index_body",
    "schema_from_mapping",
    "to_elasticsearch_mappings",
]
