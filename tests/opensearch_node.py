"""A real OpenSearch 2.19.1 node for the tests marked `opensearch_node` (pytest plugin, loaded by conftest).

The node comes from Maven Central artifacts, assembled and started by docker/opensearch-local/start.sh (core,
netty4, analysis-common, lang-painless, ingest-common, mapper-extras + the k-NN, neural-search, job-scheduler and
ML Commons plugins), on 127.0.0.1 with a free port, a throw-away data dir and no security plugin. One node per
session; it stops when the session ends (its stdin closes).

Without `java`, `javac` and `mvn` on PATH (a JDK 17+ and Maven), or when the artifacts do not resolve, every such test skips with one reason.
`LATENTSEARCH_REQUIRE_OPENSEARCH_NODE=1` (CI) turns that skip into a failure.
`LATENTSEARCH_TEST_OPENSEARCH_URL=http://host:port` uses a node that is already running instead.

k-NN engines: only `lucene` works (the project's default). The Maven Central k-NN zip ships no native
libraries, so a `faiss`/`nmslib` index fails on its first write with
`UnsatisfiedLinkError: no opensearchknn_faiss_avx512_spr in java.library.path` and the write hangs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "docker" / "opensearch-local" / "start.sh"
START_TIMEOUT_S = float(os.environ.get("LATENTSEARCH_OPENSEARCH_START_TIMEOUT_S", "240"))


@dataclass
class OpenSearchNode:
    url: str
    plugins: set[str] = field(default_factory=set)
    startup_s: float = 0.0
    log: Path | None = None

    def request(self, method: str, path: str, body: object = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def has_plugin(self, name: str) -> bool:
        return name in self.plugins


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url + "/_cluster/health?wait_for_status=green&timeout=1s", timeout=5) as r:
            return json.loads(r.read()).get("status")
    except Exception:
        return None


def _plugins(url: str) -> set[str]:
    with urllib.request.urlopen(url + "/_cat/plugins?format=json", timeout=10) as r:
        return {p["component"] for p in json.loads(r.read())}


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("LATENTSEARCH_REQUIRE_OPENSEARCH_NODE") == "1":
        pytest.fail(f"LATENTSEARCH_REQUIRE_OPENSEARCH_NODE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def opensearch_node(tmp_path_factory: pytest.TempPathFactory):
    """The session's OpenSearch node (started on first use), or a skip with one reason."""
    external = os.environ.get("LATENTSEARCH_TEST_OPENSEARCH_URL")
    if external:
        url = external.rstrip("/")
        if _health(url) is None:
            pytest.fail(f"LATENTSEARCH_TEST_OPENSEARCH_URL={url} is not reachable", pytrace=False)
        yield OpenSearchNode(url=url, plugins=_plugins(url))
        return
    # javac too: the launcher is a single-file Java source program, which needs a JDK, not only a JRE
    missing = [tool for tool in ("java", "javac", "mvn") if shutil.which(tool) is None]
    if missing:
        _skip_or_fail(f"real OpenSearch node tests need {', '.join(missing)} on PATH (a JDK 17+ and Maven)")
    workdir = tmp_path_factory.mktemp("opensearch-node")
    log = workdir / "node.log"
    assemble = subprocess.run(
        [str(LAUNCHER), "--assemble-only"], capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL
    )
    if assemble.returncode != 0:
        out = (assemble.stdout + assemble.stderr).strip().splitlines()[-5:]
        _skip_or_fail("the OpenSearch artifacts did not resolve with Maven: " + " | ".join(out))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(LAUNCHER), "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while _health(url) != "green":
            if proc.poll() is not None:
                pytest.fail(f"the OpenSearch node exited with {proc.returncode}; log {log}:\n{_tail(log)}", pytrace=False)
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"the OpenSearch node was not green after {START_TIMEOUT_S:.0f} s; log {log}:\n"
                            f"{_tail(log)}", pytrace=False)
            time.sleep(0.5)
        node = OpenSearchNode(url=url, plugins=_plugins(url), startup_s=time.monotonic() - started, log=log)
        print(f"\n[opensearch-node] {url} green in {node.startup_s:.1f} s, plugins: {sorted(node.plugins)}")
        yield node
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None and proc.stdin is not None:
        proc.stdin.close()  # the launcher stops the node on EOF
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started (start.sh and its java)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def os_index(opensearch_node: OpenSearchNode, request: pytest.FixtureRequest):
    """A fresh index name on the node, deleted after the test."""
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:80].strip("-")
    try:
        opensearch_node.request("DELETE", f"/{name}")
    except Exception:
        pass
    yield name
    try:
        opensearch_node.request("DELETE", f"/{name}*")
    except Exception:
        pass
