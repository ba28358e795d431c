"""Issue 14, server side, over real HTTP: uvicorn on loopback with the server's own connection
settings (`uvicorn_options`), no models loaded (every check here answers before a model is needed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from latentsearch.config import Settings  # noqa: E402
from latentsearch.onnx_export.serve import ServeConfig  # noqa: E402
from latentsearch.onnx_export.serve.app import create_app, uvicorn_options  # noqa: E402

KEY = "reliability-key"
SERVER_PATHS = [str(Path(__file__).resolve().parents[1])]  # the checkout, and the server's home below
AUTH = {"Authorization": f"Bearer {KEY}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("home")
    SERVER_PATHS.append(str(home))
    settings = Settings(home=home, index="papers")
    cfg = ServeConfig(port=_free_port(), api_key=KEY, preload=[], settings=settings, json_logs=False,
                      max_tokens_limit=64, max_prompt_chars=500, body_timeout_s=1.0, header_timeout_s=1.0)
    opts = uvicorn_options(cfg)
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_config=None, access_log=False, lifespan="on", **opts))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{cfg.port}"
    server.should_exit = True
    thread.join(timeout=30)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("index", ["../etc", "../../tmp/x", "a/b", "UPPER", "x" * 300])
def test_rag_and_search_validate_the_index(server: str, index: str) -> None:
    """Before: /rag took `../` names (probing *.json files on the host) and a 300-character name
    answered 500 with the server's absolute path."""
    for route, body in (("/rag", {"question": "why?", "index": index}), ("/search", {"query": "why?", "index": index})):
        res = httpx.post(server + route, json=body, headers=AUTH, timeout=30)
        assert res.status_code == 422, (route, res.text)
        assert not any(p in res.text for p in SERVER_PATHS)


def test_one_token_limit_and_prompt_bounds(server: str) -> None:
    """Before: /rag ignored the limit (100,000 tokens ran 150 s) and prompts had no bound."""
    res = httpx.post(server + "/rag", json={"question": "why?", "max_tokens": 100_000}, headers=AUTH, timeout=30)
    assert res.status_code == 413 and res.json()["error"]["code"] == "max_tokens_too_large"
    res = httpx.post(server + "/rag", json={"question": "q" * 501}, headers=AUTH, timeout=30)
    assert res.status_code == 413 and res.json()["error"]["code"] == "prompt_too_long"
    chat = {"messages": [{"role": "user", "content": "q" * 501}]}
    res = httpx.post(server + "/v1/chat/completions", json=chat, headers=AUTH, timeout=30)
    assert res.status_code == 413 and res.json()["error"]["code"] == "prompt_too_long"
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65}
    res = httpx.post(server + "/v1/chat/completions", json=chat, headers=AUTH, timeout=30)
    assert res.status_code == 413 and res.json()["error"]["code"] == "max_tokens_too_large"
    extract = {"texts": ["t" * 300, "t" * 300], "types": [{"name": "disease"}]}
    res = httpx.post(server + "/extract", json=extract, headers=AUTH, timeout=30)
    assert res.status_code == 413 and res.json()["error"]["code"] == "prompt_too_long"


@pytest.mark.parametrize("route", ["/rag", "/search", "/v1/embeddings", "/v1/chat/completions", "/extract"])
def test_a_lone_surrogate_is_422_not_500(server: str, route: str) -> None:
    body = b'{"question": "\\ud800", "query": "\\ud800", "input": "\\ud800", "texts": ["\\ud800"], ' \
           b'"messages": [{"role": "user", "content": "\\ud800"}], "types": [{"name": "x"}]}'
    res = httpx.post(server + route, content=body, headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert res.status_code == 422 and res.json()["error"]["code"] == "invalid_unicode"


def _raw(server: str, request: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send `request` on a raw socket; what comes back (until close or `wait_s`) and when."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=wait_s) as sock:
        sock.sendall(request)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
    return data, time.perf_counter() - started


def test_unauthenticated_uploads_are_refused_before_the_body_is_read(server: str) -> None:
    """Before: the 2 MiB body was read (and held) before the key was checked."""
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
    data, took = _raw(server, head, wait_s=5)
    assert data.startswith(b"HTTP/1.1 401") and took < 1.0


def test_a_stalled_body_gets_408(server: str) -> None:
    head = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
            + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"inp")
    data, took = _raw(server, head, wait_s=5)
    assert data.startswith(b"HTTP/1.1 408") and 0.9 < took < 4


def test_a_stalled_request_head_is_dropped(server: str) -> None:
    data, took = _raw(server, b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n", wait_s=5)
    assert data == b"" and 0.9 < took < 4  # closed by the server at the 1 s head deadline


def test_fifty_stalled_unauthenticated_uploads_are_answered_and_closed_at_once(server: str) -> None:
    """Before: 50 such connections each held up to 2 MiB indefinitely (+98 MiB)."""
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", _port(server)), timeout=3)
            s.sendall(b"POST /rag HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 2000000\r\n\r\n" + b"x" * 60_000)
            socks.append(s)
        started = time.perf_counter()
        for s in socks:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 401")  # answered, then closed by the server (recv hit EOF)
        assert time.perf_counter() - started < 3
        assert httpx.get(server + "/healthz", timeout=10).status_code == 200
    finally:
        for s in socks:
            s.close()
