"""Every route of the model server needs the API key, over real HTTP (uvicorn on loopback).

The routes are read from the server's own OpenAPI document (`app.openapi()`), so a route added
later is covered without touching this file; the only routes that may answer without a key are
listed in PUBLIC. No model is loaded: with the right key an empty body gets 422 (validation runs
after auth) and the GET routes answer 200, so "not 401" is checked without inference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi.routing import APIRoute

from latentsearch.config import load_settings
from latentsearch.onnx_export.serve import ServeConfig, create_app
from tests.test_serve import LiveServer

KEY = "auth-test-key"
PUBLIC = {("GET", "/healthz"), ("GET", "/ui")}  # liveness probes carry no key; /ui is a static page whose data calls need it
# /metrics needs the key (it names routes, models and traffic) unless the server runs with --metrics-public
PUBLIC_WITH_METRICS_FLAG = PUBLIC | {("GET", "/metrics")}
FASTAPI_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # framework pages, outside the schema


def _app(tmp: Path, **config):
    settings = load_settings(index="auth-test", home=tmp)
    return create_app(ServeConfig(api_key=KEY, preload=[], settings=settings, **config))


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation in the OpenAPI document of a freshly built app."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = _app(Path(tmp)).openapi()
    ops = [(m.upper(), p) for p, item in spec["paths"].items() for m in item if m in ("get", "post", "put", "delete", "patch")]
    assert len(ops) >= 8, ops  # the server has at least its 8 routes today; an empty list would test nothing
    return sorted(ops)


OPERATIONS = _operations()
PROTECTED = [op for op in OPERATIONS if op not in PUBLIC]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(_app(tmp_path_factory.mktemp("auth-home"))) as live:
        yield live


def _call(server: LiveServer, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, server.url + path, headers=headers, timeout=60)


def test_public_routes_exist_and_everything_else_is_protected() -> None:
    assert PUBLIC <= set(OPERATIONS)
    assert {("POST", "/search"), ("POST", "/extract"), ("POST", "/mentions"), ("POST", "/rag"),
            ("POST", "/v1/embeddings"), ("GET", "/metrics")} <= set(PROTECTED)


def test_every_api_route_is_in_the_openapi_document(tmp_path: Path) -> None:
    """A route hidden from the schema would escape the parametrised tests below: there must be none."""
    def walk(routes) -> Iterator:
        for r in routes:
            inner = getattr(r, "original_router", None)  # FastAPI >= 0.16x wraps included routers
            yield from walk(inner.routes) if inner is not None else [r]

    routes = list(walk(_app(tmp_path).routes))
    hidden = [r.path for r in routes if isinstance(r, APIRoute) and not r.include_in_schema]
    others = [getattr(r, "path", r) for r in routes if not isinstance(r, APIRoute) and r.path not in FASTAPI_DOCS]
    assert hidden == [] and others == []
    assert len([r for r in routes if isinstance(r, APIRoute)]) == len(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_openapi_declares_the_key_on_every_protected_operation(method: str, path: str, tmp_path: Path) -> None:
    op = _app(tmp_path).openapi()["paths"][path][method.lower()]
    assert {n for s in op.get("security", []) for n in s} == {"HTTPBearer", "APIKeyHeader"}
    assert "401" in op["responses"]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"},
                                     {"Authorization": f"Basic {KEY}"}], ids=["none", "wrong-bearer", "wrong-header",
                                                                              "not-bearer"])
def test_no_or_wrong_key_is_401(server: LiveServer, method: str, path: str, headers: dict[str, str]) -> None:
    r = _call(server, method, path, headers)
    assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}], ids=["bearer", "header"])
def test_the_right_key_passes(server: LiveServer, method: str, path: str, headers: dict[str, str]) -> None:
    r = _call(server, method, path, headers)
    assert r.status_code == (422 if method == "POST" else 200), (method, path, r.status_code, r.text[:200])


@pytest.mark.parametrize(("method", "path"), sorted(PUBLIC))
def test_public_routes_answer_without_a_key(server: LiveServer, method: str, path: str) -> None:
    assert _call(server, method, path, {}).status_code == 200


def test_metrics_public_opens_metrics_and_nothing_else(tmp_path: Path) -> None:
    """`--metrics-public` (ServeConfig.metrics_public): a Prometheus scraper without the key reads /metrics;
    every other protected route still answers 401."""
    with LiveServer(_app(tmp_path, metrics_public=True)) as live:
        metrics = _call(live, "GET", "/metrics", {})
        assert metrics.status_code == 200 and "latentsearch_" in metrics.text
        for method, path in OPERATIONS:
            expected = 200 if (method, path) in PUBLIC_WITH_METRICS_FLAG else 401
            assert _call(live, method, path, {}).status_code == expected, (method, path)


def test_serve_help_says_which_routes_need_the_key() -> None:
    from typer.testing import CliRunner

    from latentsearch.cli import app

    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    assert "--metrics-public" in out and "needs the key unless" in " ".join(out.split())
