"""Index definitions generated from the entity schema, per backend.

One chunk is one document in the index:

    doc_id, chunk{no,count,start,end}, title, text, content (= title + text, copy_to), source{path,line},
    metadata{...}, content_hash,
    vector (knn), latent.<type> (keyword arrays), mentions (nested: text,start,end,type,vector),
    links (nested: mention,start,end,entity_id,score)

The OpenSearch body is canonical; the embedded engine reads it as is, Elasticsearch gets a
`dense_vector` translation.
"""

from __future__ import annotations

from typing import Any, Literal

from latentsearch.backends.es_dialect import elasticsearch_index_body
from latentsearch.config import EntitySchema, TextConfig, VectorIndexConfig

# 2: `title` and `text` analysed by `[text] analyzer` (english by default) and copied into `content`,
#    the field lexical search queries (issue 15)
MAPPING_VERSION = 2
#: The field BM25 searches: title and text as one field (see benchmarks/lexical_ablation.py).
LEXICAL_FIELD = "content"
MENTION_DIMENSION = 500

TargetBackend = Literal["opensearch", "elasticsearch", "embedded"]


def _knn_vector(dimension: int, vector: VectorIndexConfig) -> dict[str, Any]:
    parameters: dict[str, Any] = {"m": vector.m, "ef_construction": vector.ef_construction}
    return {
        "type": "knn_vector",
        "dimension": dimension,
        "method": {
            "name": "hnsw",
            "space_type": vector.space_type,
            "engine": vector.engine,
            "parameters": parameters,
        },
    }


def opensearch_index_body(
    schema: EntitySchema,
    *,
    dimension: int,
    vector: VectorIndexConfig | None = None,
    mention_dimension: int = MENTION_DIMENSION,
    embedder: str | None = None,
    shards: int = 1,
    replicas: int = 0,
    text: TextConfig | None = None,
) -> dict[str, Any]:
    """The OpenSearch create-index body (settings + mappings) for an index with this schema."""
    vector = vector or VectorIndexConfig()
    analyzer = (text or TextConfig()).analyzer
    latent_props = {t.name: {"type": "keyword"} for t in schema.latent_types}
    index_settings: dict[str, Any] = {
        "number_of_shards": shards,
        "number_of_replicas": replicas,
        "knn": True,
    }
    return {
        "settings": {"index": index_settings},
        "mappings": {
            "dynamic": "true",
            "_meta": {
                "latentsearch": {
                    "mapping_version": MAPPING_VERSION,
                    "entities": schema.model_dump(exclude_none=True),
                    "embedder": embedder,
                    "dimension": dimension,
                    "mention_dimension": mention_dimension,
                }
            },
            "properties": {
                "doc_id": {"type": "keyword"},
                "chunk": {
                    "properties": {
                        "no": {"type": "integer"},
                        "count": {"type": "integer"},
                        "start": {"type": "integer"},
                        "end": {"type": "integer"},
                    }
                },
                "title": {"type": "text", "analyzer": analyzer, "copy_to": LEXICAL_FIELD,
                          "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
                "text": {"type": "text", "analyzer": analyzer, "copy_to": LEXICAL_FIELD},
                LEXICAL_FIELD: {"type": "text", "analyzer": analyzer},
                "source": {"properties": {"path": {"type": "keyword"}, "line": {"type": "integer"}}},
                "metadata": {"type": "object", "dynamic": "true"},
                "content_hash": {"type": "keyword"},
                "vector": _knn_vector(dimension, vector),
                "latent": {"properties": latent_props},
                "mentions": {
                    "type": "nested",
                    "properties": {
                        "text": {"type": "keyword"},
                        "start": {"type": "integer"},
                        "end": {"type": "integer"},
                        "type": {"type": "keyword"},
                        "vector": _knn_vector(mention_dimension, vector),
                    },
                },
                "links": {
                    "type": "nested",
                    "properties": {
                        "mention": {"type": "keyword"},
                        "start": {"type": "integer"},
                        "end": {"type": "integer"},
                        "entity_id": {"type": "keyword"},
                        "score": {"type": "float"},
                    },
                },
            },
        },
    }


def index_body(
    backend: TargetBackend,
    schema: EntitySchema,
    *,
    dimension: int,
    vector: VectorIndexConfig | None = None,
    embedder: str | None = None,
    text: TextConfig | None = None,
) -> dict[str, Any]:
    """The create-index body for `backend` (embedded reads the OpenSearch body)."""
    body = opensearch_index_body(schema, dimension=dimension, vector=vector, embedder=embedder, text=text)
    return elasticsearch_index_body(body) if backend == "elasticsearch" else body


def schema_from_mapping(mappings: dict[str, Any]) -> EntitySchema | None:
    """The entity schema stored in an index's `_meta` (None for indices latentsearch did not create)."""
    meta = (mappings.get("_meta") or {}).get("latentsearch")
    if not meta:
        return None
    return EntitySchema.model_validate(meta.get("entities", {}))
