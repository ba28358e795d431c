"""Loopback HTTP servers for backend tests: a recorder, a fault-injecting proxy, a tiny ES stand-in,
and an independent AWS SigV4 verifier.

Everything binds 127.0.0.1 on an ephemeral port, runs in daemon threads and is closed by the context
manager (requests in flight are released first), so a failing test cannot leave a server behind.
The real clients (opensearch-py, elasticsearch-py) talk to these over real sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit


@dataclass
class Recorded:
    """One request as it arrived on the wire."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    raw_path: str = ""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


Reply = tuple[int, dict[str, str], Any]  # status, headers, body (bytes, JSON-able, or None)
Responder = Callable[[Recorded], Reply]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up makes the late write fail; that is the point of the test.
        pass


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 that records every request and answers via `responder`."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[Recorded] = []
        self.closing = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                rec = Recorded(
                    method=self.command,
                    path=unquote(parts.path),
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    raw_path=self.path,
                )
                with outer._lock:
                    outer.requests.append(rec)
                try:
                    status, headers, payload = outer.responder(rec)
                except Exception as exc:
                    status, headers, payload = 500, {}, {"error": {"type": "fake_error", "reason": repr(exc)}}
                if payload is None:
                    data = b""
                elif isinstance(payload, bytes):
                    data = payload
                else:
                    data = json.dumps(payload).encode()
                    headers = {"Content-Type": "application/json", **headers}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD" and data:
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.closing.set()  # release handlers that sleep on purpose
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recorded(self, method: str | None = None, path_suffix: str | None = None) -> list[Recorded]:
        with self._lock:
            reqs = list(self.requests)
        return [
            r
            for r in reqs
            if (method is None or r.method == method)
            and (path_suffix is None or r.path.endswith(path_suffix))
        ]


# ---------------------------------------------------------------- fault-injecting proxy


@dataclass
class Fault:
    """What the proxy does instead of forwarding: answer `status`, or stall for `delay_s` first."""

    status: int | None = None
    delay_s: float = 0.0
    body: Any = None


FaultPlan = Callable[[Recorded, int], "Fault | None"]


def error_body(status: int) -> dict[str, Any]:
    etype = {429: "rejected_execution_exception", 503: "unavailable_shards_exception"}.get(
        status, "injected_fault"
    )
    reason = f"injected {status} by the test proxy"
    return {
        "error": {"root_cause": [{"type": etype, "reason": reason}], "type": etype, "reason": reason},
        "status": status,
    }


def fail_first(
    n: int, status: int, *, method: str | None = None, path_suffix: str | None = None
) -> FaultPlan:
    """Fail the first `n` matching requests with `status`, then forward."""
    seen = {"n": 0}
    lock = threading.Lock()

    def plan(req: Recorded, _i: int) -> Fault | None:
        if method and req.method != method:
            return None
        if path_suffix and not req.path.endswith(path_suffix):
            return None
        with lock:
            seen["n"] += 1
            return Fault(status=status) if seen["n"] <= n else None

    return plan


def always(
    status: int | None = None,
    *,
    delay_s: float = 0.0,
    method: str | None = None,
    path_suffix: str | None = None,
) -> FaultPlan:
    """Fail (or stall) every matching request."""

    def plan(req: Recorded, _i: int) -> Fault | None:
        if method and req.method != method:
            return None
        if path_suffix and not req.path.endswith(path_suffix):
            return None
        return Fault(status=status, delay_s=delay_s)

    return plan


class FaultInjectingProxy(LoopbackServer):
    """Forwards to `upstream` unless the plan says to fail or stall; records what it did."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        self.upstream = urlsplit(upstream)
        self.plan = plan
        self.faults: list[tuple[str, str, int | None]] = []
        self.forwarded: list[tuple[str, str, int]] = []
        self._count = 0
        self._count_lock = threading.Lock()
        super().__init__(self._respond)

    def _respond(self, req: Recorded) -> Reply:
        with self._count_lock:
            i = self._count
            self._count += 1
        fault = self.plan(req, i)
        if fault is not None:
            if fault.delay_s:
                self.closing.wait(fault.delay_s)
            if fault.status is not None:
                self.faults.append((req.method, req.path, fault.status))
                return fault.status, {}, fault.body if fault.body is not None else error_body(fault.status)
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=10)
        try:
            headers = {
                k: v for k, v in req.headers.items() if k not in ("host", "content-length", "connection")
            }
            conn.request(req.method, req.raw_path, body=req.body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            keep = {k: v for k, v in resp.getheaders() if k.lower() in ("content-type", "x-elastic-product")}
            self.forwarded.append((req.method, req.path, resp.status))
            return resp.status, keep, data
        finally:
            conn.close()


# ---------------------------------------------------------------- AWS SigV4 verifier


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def parse_sigv4_authorization(value: str) -> dict[str, str]:
    """Split `AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/es/aws4_request,
    SignedHeaders=a;b, Signature=hex` into its parts."""
    algorithm, _, rest = value.partition(" ")
    fields = dict(part.strip().split("=", 1) for part in rest.split(","))
    access_key, date, region, service, terminal = fields["Credential"].split("/")
    return {
        "algorithm": algorithm,
        "access_key": access_key,
        "date": date,
        "region": region,
        "service": service,
        "terminal": terminal,
        "signed_headers": fields["SignedHeaders"],
        "signature": fields["Signature"],
    }


def verify_sigv4(req: Recorded, secret_key: str) -> bool:
    """Recompute the SigV4 signature of a recorded request from the AWS spec (stdlib only, no botocore)
    and compare. Covers what the tests send: plain ASCII paths and simple query strings."""
    auth = parse_sigv4_authorization(req.headers["authorization"])
    amz_date = req.headers["x-amz-date"]
    payload_hash = req.headers.get("x-amz-content-sha256") or hashlib.sha256(req.body).hexdigest()
    if payload_hash != hashlib.sha256(req.body).hexdigest():
        return False
    path = quote(req.path or "/", safe="/~")
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(req.query.items()))
    signed = auth["signed_headers"].split(";")
    canonical_headers = "".join(f"{h}:{' '.join(req.headers[h].split())}\n" for h in signed)
    canonical = "\n".join([req.method, path, query, canonical_headers, auth["signed_headers"], payload_hash])
    scope = f"{auth['date']}/{auth['region']}/{auth['service']}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_key).encode(), auth["date"])
    for part in (auth["region"], auth["service"], "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, auth["signature"])


# ---------------------------------------------------------------- a tiny Elasticsearch stand-in


def opensearch_ok(req: Recorded) -> Reply:
    """Minimal OpenSearch answers for the calls the SigV4 test makes."""
    if req.method == "HEAD":
        return 200, {}, None
    if req.path.endswith("/_search"):
        return (
            200,
            {},
            {
                "took": 1,
                "timed_out": False,
                "hits": {"total": {"value": 0, "relation": "eq"}, "max_score": None, "hits": []},
            },
        )
    if req.path.endswith("/_bulk"):
        docs = [line for line in req.ndjson() if "index" in line or "delete" in line]
        items = [
            {"index": {"_id": d.get("index", d.get("delete", {})).get("_id"), "status": 201}} for d in docs
        ]
        return 200, {}, {"took": 1, "errors": False, "items": items}
    return 200, {}, {"acknowledged": True}


def es_query_to_opensearch(query: Any, similarities: dict[str, str]) -> Any:
    """The inverse of es_dialect.QueryTranslator, written independently: ES `knn` objects back to
    OpenSearch's `{"knn": {field: {...}}}` (a `similarity` threshold back to min_score/max_distance
    on OpenSearch's scales); every other clause is the same DSL in both and passes through."""
    if isinstance(query, list):
        return [es_query_to_opensearch(q, similarities) for q in query]
    if not isinstance(query, dict):
        return query
    knn = query.get("knn")
    if len(query) == 1 and isinstance(knn, dict) and "field" in knn:
        spec: dict[str, Any] = {"vector": knn["query_vector"]}
        if "similarity" in knn:
            sim, t = similarities.get(knn["field"], "cosine"), float(knn["similarity"])
            spec.update({"cosine": {"min_score": (1 + t) / 2}, "dot_product": {"min_score": (1 + t) / 2},
                         "l2_norm": {"max_distance": t * t}}.get(sim, {"max_distance": -t}))
        else:
            spec["k"] = knn["k"]
        if knn.get("filter"):
            spec["filter"] = {"bool": {"filter": es_query_to_opensearch(knn["filter"], similarities)}}
        for key in ("boost", "_name"):
            if key in knn:
                spec[key] = knn[key]
        return {"knn": {knn["field"]: spec}}
    return {k: es_query_to_opensearch(v, similarities) for k, v in query.items()}


def es_search_to_opensearch(body: dict[str, Any], similarities: dict[str, str]) -> dict[str, Any]:
    """An ES search body as the embedded engine's OpenSearch body: retrievers become `hybrid` plus an
    inline search pipeline (rrf -> score-ranker, linear -> normalization with the weights)."""
    out = {k: es_query_to_opensearch(v, similarities) for k, v in body.items() if k != "retriever"}
    retriever = body.get("retriever")
    if retriever:
        ((kind, spec),) = retriever.items()
        if kind == "rrf":
            subs = [r["standard"]["query"] for r in spec["retrievers"]]
            pipeline = {"phase_results_processors": [{"score-ranker-processor": {
                "combination": {"technique": "rrf", "rank_constant": spec.get("rank_constant", 60)}}}]}
        elif kind == "linear":
            subs = [r["retriever"]["standard"]["query"] for r in spec["retrievers"]]
            technique = {"minmax": "min_max", "l2_norm": "l2"}[spec["retrievers"][0]["normalizer"]]
            pipeline = {"phase_results_processors": [{"normalization-processor": {
                "normalization": {"technique": technique},
                "combination": {"technique": "arithmetic_mean",
                                "parameters": {"weights": [r["weight"] for r in spec["retrievers"]]}}}}]}
        else:
            raise ValueError(f"retriever {kind} is not emulated")
        out["query"] = {"hybrid": {"queries": [es_query_to_opensearch(q, similarities) for q in subs],
                                   "pagination_depth": spec.get("rank_window_size", 10)}}
        out["search_pipeline"] = pipeline
    return out


@dataclass
class FakeElasticsearch:
    """Just enough Elasticsearch for the client to talk to. Documents live in a real embedded engine
    (a private temporary database): index creation maps the dense_vector mapping back to knn_vector,
    and every search, msearch and count runs the received ES query, translated back independently
    (`es_search_to_opensearch`), so a response holds only the documents the query matches.

    `total_as_int` answers `hits.total` as a bare int (ES with rest_total_hits_as_int / 6.x style)
    so the response translation can be checked. Documents with `"bad": true` fail like a mapping error.
    """

    total_as_int: bool = False
    indices: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=lambda: {"X-Elastic-Product": "Elasticsearch"})
    engine: Any = None

    def __post_init__(self) -> None:
        import tempfile

        from latentsearch.backends.embedded import EmbeddedBackend

        self._tmp = tempfile.TemporaryDirectory(prefix="fake-es-")
        self.engine = EmbeddedBackend(self._tmp.name)

    def __call__(self, req: Recorded) -> Reply:
        from latentsearch.backends.base import BackendError

        try:
            status, body = self.route(req)
        except BackendError as err:  # the engine refused the query: answer like ES would
            error = {"type": err.error_type or "parsing_exception", "reason": str(err)}
            status, body = 400, {"error": {**error, "root_cause": [error]}, "status": 400}
        return status, dict(self.headers), body

    @staticmethod
    def _missing(index: str) -> tuple[int, dict[str, Any]]:
        err = {"type": "index_not_found_exception", "reason": f"no such index [{index}]", "index": index}
        return 404, {"error": {**err, "root_cause": [err]}, "status": 404}

    def _similarities(self, index: str) -> dict[str, str]:
        from latentsearch.backends import es_dialect

        return es_dialect.vector_similarities(self.indices[index]["mappings"])

    def _hits(self, index: str, body: dict[str, Any] | None) -> dict[str, Any]:
        body = dict(body or {})
        found = self.engine.search(index, es_search_to_opensearch(body, self._similarities(index)))
        hits = [
            {**h, **({"_rank": n + 1} if "retriever" in body else {})}
            for n, h in enumerate(found["hits"]["hits"])
        ]
        value = found["hits"]["total"]["value"]
        total: Any = value if self.total_as_int else {"value": value, "relation": "eq"}
        return {
            "took": 2,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {"total": total, "max_score": found["hits"].get("max_score"), "hits": hits},
        }

    def route(self, req: Recorded) -> tuple[int, Any]:
        from latentsearch.backends import es_dialect
        from latentsearch.backends.base import BulkAction

        parts = [p for p in req.path.split("/") if p]
        m = req.method
        if not parts:
            return 200, {
                "name": "fake",
                "cluster_name": "fake",
                "version": {"number": "9.1.0", "build_flavor": "default"},
                "tagline": "You Know, for Search",
            }
        if parts == ["_cat", "indices"]:
            return 200, [{"index": name} for name in sorted(self.indices)]
        index = parts[0]
        if len(parts) == 1:
            if m == "HEAD":
                return (200 if index in self.indices else 404), None
            if m == "PUT":
                if index in self.indices:
                    err = {
                        "type": "resource_already_exists_exception",
                        "reason": f"index [{index}] already exists",
                    }
                    return 400, {"error": {**err, "root_cause": [err]}, "status": 400}
                body = req.json() or {}
                mappings = body.get("mappings", {})
                self.engine.create_index(index, {
                    "settings": {"index": {"knn": True}},
                    "mappings": es_dialect.from_elasticsearch_mappings(mappings) if mappings else {},
                })
                self.indices[index] = {"mappings": mappings, "settings": body.get("settings", {})}
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": index}
            if m == "DELETE":
                if index not in self.indices:
                    return self._missing(index)
                del self.indices[index]
                self.engine.delete_index(index)
                return 200, {"acknowledged": True}
        if index not in self.indices:
            return self._missing(index)
        op = parts[1]
        if op == "_mapping":
            return 200, {index: {"mappings": self.indices[index]["mappings"]}}
        if op == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if op == "_count":
            body = req.json() or {}
            query = es_query_to_opensearch(body["query"], self._similarities(index)) if "query" in body else None
            return 200, {"count": self.engine.count(index, query)}
        if op == "_doc":
            doc_id = parts[2]
            src = self.engine.get(index, doc_id)
            if src is None:
                return 404, {"_index": index, "_id": doc_id, "found": False}
            return 200, {"_index": index, "_id": doc_id, "found": True, "_source": src}
        if op == "_bulk":
            lines = req.ndjson()
            actions, bad, i = [], {}, 0
            while i < len(lines):
                ((action, meta),) = lines[i].items()
                if action in ("index", "create"):
                    src = lines[i + 1]
                    i += 2
                    if src.get("bad"):
                        bad[len(actions)] = meta["_id"]
                    actions.append(BulkAction(meta["_id"], src, op=action))
                else:
                    i += 1
                    actions.append(BulkAction(meta["_id"], op="delete"))
            good = [a for n, a in enumerate(actions) if n not in bad]
            results = iter(self.engine.bulk(index, good))
            items = []
            for n, a in enumerate(actions):
                if n in bad:
                    items.append({"index": {"_index": index, "_id": a.id, "status": 400, "error": {
                        "type": "document_parsing_exception", "reason": "[1:8] failed to parse field [bad]"}}})
                    continue
                r = next(results)
                detail: dict[str, Any] = {"_index": index, "_id": r.id, "status": r.status}
                if r.result:
                    detail["result"] = r.result
                if r.error:
                    detail["error"] = {"type": r.error_type, "reason": r.error}
                items.append({a.op: detail})
            errors = any("error" in next(iter(item.values())) for item in items)
            return 200, {"took": 1, "errors": errors, "items": items}
        if op == "_search":
            return 200, self._hits(index, req.json())
        if op == "_msearch":
            lines = req.ndjson()
            responses = []
            for header, body in zip(lines[0::2], lines[1::2]):
                target = header.get("index", index)
                if target not in self.indices:
                    _status, err = self._missing(target)
                    responses.append(err)
                else:
                    responses.append({**self._hits(target, body), "status": 200})
            return 200, {"took": 3, "responses": responses}
        return 400, {
            "error": {"type": "fake_unsupported", "reason": f"{m} {req.path} not faked"},
            "status": 400,
        }


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
