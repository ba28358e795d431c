"""OpenSearchBackend over real HTTP: osmem-server (an in-memory OpenSearch-compatible server) for the
index/document/search API, a fault-injecting loopback proxy for retries and transient errors, and a
recording loopback server for SigV4 signing. Nothing under test is mocked.

osmem accepts the full latentsearch mapping, `knn_vector` properties and `settings.index.knn`
included (it even checks vector dimensions on write), but it cannot run a `knn` query; kNN
behaviour is therefore not tested here (the embedded backend and numpy are its oracles).
"""

from __future__ import annotations

import base64
import hashlib
import socket
import sys

import pytest

from latentsearch import dsl
from latentsearch.backends import open_backend
from latentsearch.backends.base import BackendError, BulkAction, IndexNotFoundError, TransientBackendError
from latentsearch.backends.opensearch import OpenSearchBackend, client_kwargs
from latentsearch.config import AuthConfig, BackendConfig, EntitySchema, TLSConfig
from latentsearch.mappings.builder import opensearch_index_body
from tests.oracles.http_fakes import (
    FaultInjectingProxy,
    LoopbackServer,
    always,
    fail_first,
    opensearch_ok,
    parse_sigv4_authorization,
    verify_sigv4,
)

INDEX = "docs"
DIM = 4


def index_body() -> dict:
    schema = EntitySchema(latent_types=["disease", "drug"])
    return opensearch_index_body(schema, dimension=DIM, mention_dimension=DIM, embedder="test-embedder")


def doc(n: int, *, diseases: list[str], text: str = "", no: object = 0) -> dict:
    return {
        "doc_id": f"d{n}",
        "chunk": {"no": no, "count": 1},
        "title": f"title {n}",
        "text": text or f"document number {n}",
        "vector": [1.0, float(n), 0.0, 0.5],
        "latent": {"disease": diseases},
        "mentions": [
            {"text": f"m{n}", "type": "disease", "start": 0, "end": 2, "vector": [0.1, 0.2, 0.3, float(n)]}
        ],
    }


def backend_for(url: str, **overrides: object) -> OpenSearchBackend:
    config = BackendConfig(kind="opensearch", url=url, **{"timeout_s": 5.0, "max_retries": 2, **overrides})
    backend = open_backend(config)
    assert isinstance(backend, OpenSearchBackend)
    return backend


@pytest.fixture
def backend(osmem_clone):
    with backend_for(osmem_clone.url) as b:
        yield b


@pytest.fixture
def filled(backend):
    backend.create_index(INDEX, index_body())
    actions = [
        BulkAction(id="1", source=doc(1, diseases=["flu"], text="fever and cough")),
        BulkAction(id="2", source=doc(2, diseases=["flu", "covid"], text="cough with loss of smell")),
        BulkAction(id="3", source=doc(3, diseases=["diabetes"], text="thirst and fatigue")),
    ]
    results = backend.bulk(INDEX, actions, refresh=True)
    assert [r.ok for r in results] == [True, True, True]
    return backend


# ---------------------------------------------------------------- indices


def test_index_lifecycle(backend):
    assert backend.index_exists(INDEX) is False
    assert backend.create_index(INDEX, index_body()) is True
    assert backend.index_exists(INDEX) is True
    assert backend.create_index(INDEX, index_body(), exist_ok=True) is False
    with pytest.raises(BackendError, match="already exists"):
        backend.create_index(INDEX, index_body())

    mapping = backend.get_mapping(INDEX)
    assert mapping["_meta"]["latentsearch"]["dimension"] == DIM
    assert mapping["properties"]["vector"]["type"] == "knn_vector"
    assert mapping["properties"]["vector"]["dimension"] == DIM
    assert mapping["properties"]["mentions"]["type"] == "nested"
    assert mapping["properties"]["latent"]["properties"]["disease"] == {"type": "keyword"}

    backend.create_index(".latentsearch-internal", {})
    backend.create_index("other", {})
    assert backend.list_indices() == ["docs", "other"]  # system (dot) indices are skipped

    info = backend.info(INDEX)
    assert info.docs == 0 and info.backend == "opensearch"

    assert backend.delete_index(INDEX) is True
    assert backend.delete_index(INDEX) is False
    with pytest.raises(IndexNotFoundError):
        backend.delete_index(INDEX, missing_ok=False)
    assert backend.list_indices() == ["other"]


def test_missing_index_raises_index_not_found(backend):
    calls = [
        lambda: backend.get_mapping("nope"),
        lambda: backend.search("nope", {"query": dsl.match_all()}),
        lambda: backend.msearch("nope", [{"query": dsl.match_all()}]),
        lambda: backend.count("nope"),
        lambda: backend.get("nope", "1"),
        lambda: backend.refresh("nope"),
    ]
    for call in calls:
        with pytest.raises(IndexNotFoundError) as err:
            call()
        assert err.value.status == 404 and err.value.index == "nope"
        assert "latentsearch ingest" in str(err.value)


# ---------------------------------------------------------------- bulk


def test_bulk_upsert_is_idempotent(filled):
    again = [
        BulkAction(id="1", source=doc(1, diseases=["flu"], text="fever, cough, updated")),
        BulkAction(id="2", source=doc(2, diseases=["covid"])),
        BulkAction(id="3", source=doc(3, diseases=["diabetes"])),
    ]
    results = filled.bulk(INDEX, again, refresh=True)
    assert [(r.id, r.status) for r in results] == [("1", 200), ("2", 200), ("3", 200)]  # updated, not created
    assert filled.count(INDEX) == 3
    assert filled.get(INDEX, "1")["text"] == "fever, cough, updated"
    assert filled.get(INDEX, "2")["latent"]["disease"] == ["covid"]


def test_bulk_item_errors_do_not_stop_the_rest(filled):
    actions = [
        BulkAction(id="4", source=doc(4, diseases=["gout"])),
        BulkAction(id="5", source=doc(5, diseases=["gout"], no="not-an-int")),  # integer field
        BulkAction(id="6", source={**doc(6, diseases=["gout"]), "vector": [1.0, 2.0]}),  # wrong dimension
        BulkAction(id="3", op="delete"),
        BulkAction(id="404", op="delete"),
        BulkAction(id="7", source=doc(7, diseases=["gout"])),
    ]
    results = filled.bulk(INDEX, actions, refresh=True)
    assert [r.id for r in results] == ["4", "5", "6", "3", "404", "7"]
    by_id = {r.id: r for r in results}
    assert by_id["4"].ok and by_id["7"].ok and by_id["3"].ok
    assert by_id["404"].status == 404 and by_id["404"].ok  # deleting a missing doc is not a failure
    for bad in ("5", "6"):
        assert not by_id[bad].ok and not by_id[bad].retryable
        assert by_id[bad].status == 400
        assert by_id[bad].error_type == "mapper_parsing_exception"
    assert "chunk.no" in by_id["5"].error
    assert "dimension" in by_id["6"].error.lower()
    assert filled.count(INDEX) == 4  # 1, 2, 4, 7
    assert filled.get(INDEX, "3") is None and filled.get(INDEX, "5") is None
    assert filled.bulk(INDEX, []) == []
    with pytest.raises(ValueError):
        filled.bulk(INDEX, [BulkAction(id="x")])


# ---------------------------------------------------------------- search


def test_search_msearch_count_get(filled):
    flu = dsl.bool_query(filter=[dsl.term("latent.disease", "flu")])
    response = filled.search(INDEX, dsl.search_body(flu, size=10))
    assert response["hits"]["total"] == {"value": 2, "relation": "eq"}
    assert sorted(h["_id"] for h in response["hits"]["hits"]) == ["1", "2"]
    assert "vector" not in response["hits"]["hits"][0]["_source"]  # source_excludes went out

    either = dsl.bool_query(
        should=[dsl.term("latent.disease", "flu"), dsl.term("latent.disease", "covid")],
        minimum_should_match=2,
    )
    bodies = [
        dsl.search_body(either),
        dsl.search_body(dsl.match("text", "cough")),
        dsl.search_body(dsl.match_all(), size=0),
    ]
    responses = filled.msearch(INDEX, bodies)
    assert [r["hits"]["total"]["value"] for r in responses] == [1, 2, 3]
    assert [h["_id"] for h in responses[0]["hits"]["hits"]] == ["2"]
    assert filled.msearch(INDEX, []) == []

    assert filled.count(INDEX) == 3
    assert filled.count(INDEX, dsl.terms("latent.disease", ["covid", "diabetes"])) == 2
    assert filled.get(INDEX, "3")["doc_id"] == "d3"
    assert filled.get(INDEX, "missing") is None


def test_search_params_go_on_the_wire(filled):
    ok = filled.search(INDEX, {"query": dsl.match_all()}, params={"search_pipeline": "_none"})
    assert ok["hits"]["total"]["value"] == 3
    with pytest.raises(BackendError, match="not defined") as err:
        filled.search(INDEX, {"query": dsl.match_all()}, params={"search_pipeline": "no-such-pipeline"})
    assert err.value.status == 400


def test_msearch_body_error_raises_with_reason(filled):
    bad = dsl.search_body(dsl.range_("chunk.no", gte="abc"))
    with pytest.raises(BackendError, match="abc") as err:
        filled.msearch(INDEX, [dsl.search_body(dsl.match_all()), bad])
    assert err.value.status == 400 and "msearch body #1" in str(err.value)


def test_knn_query_is_sent_verbatim(filled):
    # osmem has no knn: the refusal proves the clause reached the server untouched.
    with pytest.raises(BackendError, match="knn") as err:
        filled.search(INDEX, dsl.search_body(dsl.knn("vector", [1, 0, 0, 0], k=2)))
    assert err.value.status == 400


# ---------------------------------------------------------------- retries and transient errors


def test_retries_through_429s(osmem_clone):
    with (
        FaultInjectingProxy(osmem_clone.url, fail_first(2, 429, path_suffix="/_count")) as proxy,
        backend_for(proxy.url, max_retries=2) as b,
    ):
        b.create_index(INDEX, index_body())
        assert b.count(INDEX) == 0
    assert [f[2] for f in proxy.faults] == [429, 429]
    assert proxy.forwarded[-1] == ("POST", f"/{INDEX}/_count", 200)  # the third try got through


def test_retries_then_bulk_lands(osmem_clone):
    with (
        FaultInjectingProxy(osmem_clone.url, fail_first(1, 503, path_suffix="/_bulk")) as proxy,
        backend_for(proxy.url, max_retries=1) as b,
    ):
        b.create_index(INDEX, index_body())
        results = b.bulk(INDEX, [BulkAction(id="1", source=doc(1, diseases=["flu"]))], refresh=True)
        assert results[0].ok
        assert b.count(INDEX) == 1
    assert len(proxy.recorded("POST", "/_bulk")) == 2


def test_persistent_503_on_bulk_is_transient(osmem_clone):
    with (
        FaultInjectingProxy(osmem_clone.url, always(503, path_suffix="/_bulk")) as proxy,
        backend_for(proxy.url, max_retries=2) as b,
    ):
        b.create_index(INDEX, index_body())
        with pytest.raises(TransientBackendError) as err:
            b.bulk(INDEX, [BulkAction(id="1", source=doc(1, diseases=["flu"]))])
        assert b.count(INDEX) == 0  # nothing landed
    assert err.value.status == 503 and "retry later" in str(err.value)
    assert len(proxy.recorded("POST", "/_bulk")) == 3  # first try + max_retries


def test_500_is_not_retried_but_is_transient(osmem_clone):
    with (
        FaultInjectingProxy(osmem_clone.url, always(500, path_suffix="/_search")) as proxy,
        backend_for(proxy.url, max_retries=3) as b,
        pytest.raises(TransientBackendError) as err,
    ):
        b.search(INDEX, {"query": dsl.match_all()})
    assert err.value.status == 500
    assert len(proxy.recorded(path_suffix="/_search")) == 1


def test_timeout_is_retried_then_transient(osmem_clone):
    with (
        FaultInjectingProxy(osmem_clone.url, always(None, delay_s=3.0, path_suffix="/_search")) as proxy,
        backend_for(proxy.url, timeout_s=0.3, max_retries=1) as b,
    ):
        with pytest.raises(TransientBackendError, match="timeout") as err:
            b.search(INDEX, {"query": dsl.match_all()})
        assert err.value.status == 504
        assert len(proxy.recorded(path_suffix="/_search")) == 2


def test_connection_refused_is_transient():
    with socket.socket() as s:  # a port that was free a moment ago and has nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        backend_for(f"http://127.0.0.1:{port}", max_retries=1) as b,
        pytest.raises(TransientBackendError, match="cannot reach") as err,
    ):
        b.bulk(INDEX, [BulkAction(id="1", source={"a": 1})])
    assert err.value.status == 503


# ---------------------------------------------------------------- auth on the wire


def test_basic_and_api_key_headers():
    with LoopbackServer(opensearch_ok) as server:
        basic = AuthConfig(kind="basic", username="alice", password="s3cret")
        with backend_for(server.url, auth=basic) as b:
            assert b.index_exists(INDEX)
        key = AuthConfig(kind="api_key", api_key="a2V5aWQ6c2VjcmV0")
        with backend_for(server.url, auth=key) as b:
            b.search(INDEX, {"query": dsl.match_all()})
    first, second = server.recorded()
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert second.headers["authorization"] == "ApiKey a2V5aWQ6c2VjcmV0"


def test_tls_options_reach_the_client(tmp_path):
    ca = tmp_path / "ca.pem"
    config = BackendConfig(
        kind="opensearch",
        url="https://search.example:9200",
        timeout_s=7,
        max_retries=4,
        tls=TLSConfig(
            verify=False, ca_certs=ca, client_cert=tmp_path / "c.pem", client_key=tmp_path / "k.pem"
        ),
    )
    kwargs = client_kwargs(config)
    assert kwargs["verify_certs"] is False and kwargs["ssl_show_warn"] is False
    assert kwargs["ca_certs"] == str(ca)
    assert kwargs["client_cert"].endswith("c.pem") and kwargs["client_key"].endswith("k.pem")
    assert kwargs["timeout"] == 7 and kwargs["max_retries"] == 4 and kwargs["retry_on_timeout"] is True
    assert set(kwargs["retry_on_status"]) == {429, 502, 503, 504}
    OpenSearchBackend.from_config(config).close()  # the client accepts every option


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-example")
    return monkeypatch


@pytest.mark.parametrize("service", ["es", "aoss"])
def test_sigv4_signs_every_request(aws_env, service):
    auth = AuthConfig(kind="aws_sigv4", aws_region="us-west-2", aws_service=service)
    with LoopbackServer(opensearch_ok) as server, backend_for(server.url, auth=auth) as b:
        assert b.index_exists(INDEX)
        b.search(INDEX, {"query": dsl.term("latent.disease", "flu")}, params={"search_pipeline": "_none"})
        b.bulk(INDEX, [BulkAction(id="1", source={"text": "x"})], refresh=True)
        b.refresh(INDEX)
    requests = server.recorded()
    # aoss has no _refresh API and no refresh flag: the backend must not send them.
    expected = 3 if service == "aoss" else 4
    assert len(requests) == expected
    bulk = server.recorded("POST", "/_bulk")[0]
    assert ("refresh" in bulk.query) is (service == "es")
    for req in requests:
        header = req.headers["authorization"]
        assert header.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        parts = parse_sigv4_authorization(header)
        assert (parts["region"], parts["service"], parts["terminal"]) == (
            "us-west-2",
            service,
            "aws4_request",
        )
        assert parts["date"] == req.headers["x-amz-date"][:8]
        assert "host" in parts["signed_headers"].split(";")
        assert req.headers["x-amz-security-token"] == "session-token-example"
        assert req.headers["x-amz-content-sha256"] == hashlib.sha256(req.body).hexdigest()
        assert verify_sigv4(req, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), (
            f"bad signature for {req.method} {req.path}"
        )
        assert not verify_sigv4(req, "wrong-secret")


def test_sigv4_without_credentials_says_what_to_set(aws_env):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        aws_env.delenv(name)
    auth = AuthConfig(kind="aws_sigv4", aws_region="eu-west-1")
    with pytest.raises(BackendError, match="AWS_ACCESS_KEY_ID"):
        backend_for("http://127.0.0.1:9", auth=auth)


def test_sigv4_without_boto3_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail
    auth = AuthConfig(kind="aws_sigv4", aws_region="eu-west-1")
    with pytest.raises(ImportError, match=r"pip install 'latentsearch\[aws\]'"):
        backend_for("http://127.0.0.1:9", auth=auth)
