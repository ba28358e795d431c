"""OpenSearch's document status semantics in the embedded engine, pinned by the OpenSearch API spec's
own recorded stories (tests/vendor/opensearch-api-spec/tests/default/indices/{doc,bulk}.yaml): the
expected statuses are read from those files, not written here, so the engine answers what a node does.

The story chapters map onto bulk items (the engine's only write path) the way OpenSearch maps them:
`POST /{index}/_doc/{id}` of a new id and `create` are 201 created, `PUT /{index}/_doc/{id}` of an
existing id is 200 updated, `DELETE` is 200 deleted, then 404 not_found once the document is gone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from latentsearch.backends.base import BulkAction
from latentsearch.backends.embedded import EmbeddedBackend

STORIES = Path(__file__).parent / "vendor" / "opensearch-api-spec" / "tests" / "default" / "indices"
MAPPING = {"mappings": {"properties": {"title": {"type": "text"}, "year": {"type": "integer"}}}}


def _story(name: str) -> list[dict]:
    return yaml.safe_load((STORIES / name).read_text(encoding="utf-8"))["chapters"]


@pytest.fixture()
def backend(tmp_path: Path) -> EmbeddedBackend:
    b = EmbeddedBackend(tmp_path / "db")
    b.create_index("movies", MAPPING)
    return b


def test_doc_story_statuses(backend: EmbeddedBackend) -> None:
    """doc.yaml: create 201, overwrite 200, get 200, delete 200, get/delete of the deleted doc 404."""
    checked = 0
    for chapter in _story("doc.yaml"):
        path, method = chapter["path"], chapter["method"]
        expected = chapter["response"]["status"]
        doc_id = (chapter.get("parameters") or {}).get("id")
        if doc_id is None:
            continue  # POST /{index}/_doc: the server picks the id; nothing id-specific to check
        if method in ("POST", "PUT"):
            (item,) = backend.bulk("movies", [BulkAction(doc_id, chapter["request"]["payload"])])
            assert (item.status, item.result) == (expected, {201: "created", 200: "updated"}[expected]), chapter
        elif method == "DELETE":
            (item,) = backend.bulk("movies", [BulkAction(doc_id, op="delete")])
            assert (item.status, item.result) == (expected, {200: "deleted", 404: "not_found"}[expected]), chapter
            assert item.ok  # a 404 delete is an answer, not a failure (OpenSearch: errors=false)
        else:  # GET / HEAD
            assert (200 if backend.get("movies", doc_id) is not None else 404) == expected, chapter
        assert path.startswith("/{index}/_doc")
        checked += 1
    assert checked == 8  # every id-bearing chapter of the story ran


def test_bulk_story_delete_of_a_missing_id_is_404_not_found(backend: EmbeddedBackend) -> None:
    chapter = next(c for c in _story("bulk.yaml") if c["synopsis"] == "Delete document in an index.")
    ((op, meta),) = chapter["request"]["payload"][0].items()
    ((_, expected),) = chapter["response"]["payload"]["items"][0].items()
    assert op == "delete"
    (item,) = backend.bulk("movies", [BulkAction(meta["_id"], op="delete")])
    assert (item.status, item.result) == (expected["status"], expected["result"]) == (404, "not_found")
    assert item.ok and item.error is None and not chapter["response"]["payload"]["errors"]


def test_bulk_items_follow_sequential_semantics_within_one_request(backend: EmbeddedBackend) -> None:
    """Inside one bulk each item sees the ones before it, as on a node."""
    backend.bulk("movies", [BulkAction("old", {"title": "Old", "year": 1950})])
    results = backend.bulk("movies", [
        BulkAction("new", {"title": "New", "year": 2000}),  # 201 created
        BulkAction("new", {"title": "New again", "year": 2001}),  # 200: the previous item created it
        BulkAction("old", op="create", source={"title": "Dup", "year": 1}),  # 409: exists
        BulkAction("fresh", op="create", source={"title": "Fresh", "year": 2020}),  # 201
        BulkAction("old", op="delete"),  # 200 deleted
        BulkAction("old", op="delete"),  # 404: the previous item deleted it
        BulkAction("old", {"title": "Back", "year": 1951}),  # 201: re-created
        BulkAction("ghost", op="delete"),  # 404
    ])
    assert [(r.status, r.result) for r in results] == [
        (201, "created"), (200, "updated"), (409, None), (201, "created"),
        (200, "deleted"), (404, "not_found"), (201, "created"), (404, "not_found"),
    ]
    assert results[2].error_type == "version_conflict_engine_exception" and not results[2].ok
    assert backend.get("movies", "new")["title"] == "New again"
    assert backend.get("movies", "old")["title"] == "Back"
    assert backend.get("movies", "fresh")["year"] == 2020
    assert backend.count("movies") == 3


def test_an_unsupported_op_lists_the_supported_ones(backend: EmbeddedBackend) -> None:
    (item,) = backend.bulk("movies", [BulkAction("x", {"title": "t"}, op="update")])  # type: ignore[arg-type]
    assert item.status == 400 and "index, create, delete" in item.error
