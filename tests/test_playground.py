"""The strictness playground (`/ui`) in a real headless Chromium against a real `latentsearch serve` on
loopback: type a question, see its latent entities and the per-level document counts, move the strictness
control and see the filtered list change, load a qrels file and see the judged document highlighted, and
save the screenshot the README shows (docs/playground.png).

The index is real: bundled SciFact abstracts ingested with latent entities read from titles by the LentEx
extractor (the demo's setup), so the test loads SmolLM2 and takes a minute or two on 2 cores: `slow`.
Chromium is Debian's (`apt-get install chromium`; .ci/run installs it), driven by Playwright's Python
package with `executable_path`; no browser is ever downloaded. Skips with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install -y chromium)"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                                   "(pip install -e '.[dev]')")

REPO = Path(__file__).resolve().parents[1]
INDEX = "playground-test"
CLAIM_ID = "71"  # "Activation of the Rac1 homolog CED-10 kills viable cells in SRGP-1 mutant Caenorhabditis elegans."
OTHER = "Chloroquine prophylaxis causes retinal toxicity in long-term travellers."
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SCREENSHOT = REPO / "docs" / "playground.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo's corpus (the claims' evidence + sample abstracts) with latent entities, in a private db."""
    from latentsearch.cli.demo import DEMO_SCHEMA, claim_queries, demo_subset
    from latentsearch.config import load_settings
    from latentsearch.ingest.pipeline import ingest

    home = tmp_path_factory.mktemp("playground")
    # a private db; the content cache stays the machine's, so titles `make demo` extracted are not redone
    settings = load_settings(index=INDEX, entities=DEMO_SCHEMA)
    settings.backend.embedded_path = home / "db"
    settings.ingest.latent_input = "title"
    claims = claim_queries(3)
    corpus = demo_subset(home, claims, 24)
    report = ingest(corpus, settings, progress=False)
    assert report.rejected == 0 and report.chunks_written >= 24
    claim = next(q for q in claims if q["_id"] == CLAIM_ID)
    return settings.backend.resolved_embedded_path, claim


@pytest.fixture(scope="module")
def server(db: tuple[Path, dict]):
    """`latentsearch serve` as a subprocess on a free loopback port, on the test's embedded db."""
    path, _ = db
    port = _free_port()
    env = {**os.environ, "LATENTSEARCH_BACKEND__EMBEDDED_PATH": str(path), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "latentsearch.cli", "serve", "--port", str(port), "--index",
                             INDEX, "--plain-logs"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.time() + 180
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"latentsearch serve did not start:\n{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _counts(page) -> dict[str, str]:
    rows = page.locator("#levels tr")
    return {rows.nth(i).get_attribute("data-level"): rows.nth(i).locator("td.count").inner_text()
            for i in range(rows.count())}


def _docs(page, list_id: str) -> list[str]:
    return page.locator(f"#{list_id} li[data-doc]").evaluate_all("els => els.map(e => e.dataset.doc)")


def test_playground_in_headless_chromium(server: str, db: tuple[Path, dict], tmp_path: Path) -> None:
    _, claim = db
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{claim['_id']}\t{d}\t1\n" for d in claim["relevant"]))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{server}/ui")
        playwright_api.expect(page.locator("#index option", has_text=INDEX)).to_have_count(1)

        # 1. a question: its latent entities, documents per level, auto's choice
        page.fill("#question", claim["text"])
        playwright_api.expect(page.locator("#entities tr td").first).not_to_have_text("", timeout=120_000)
        page.wait_for_function("document.querySelectorAll('#levels tr').length >= 2", timeout=120_000)
        first = _counts(page)
        assert "none" in first and "auto" in first and len(first) >= 3, first  # none, ≥1 filter level, auto
        assert int(first["none"]) > min(int(v) for k, v in first.items() if k not in ("none", "auto"))
        entities = page.locator("#entities").inner_text()
        assert entities.strip() and "none in the index" not in entities.split("\n")[0] or entities

        # 2. the control: none shows the unfiltered list, the strictest level a shorter/different one
        without = _docs(page, "without")
        page.locator("#strictness").fill("0")
        assert _docs(page, "with") == without
        assert page.locator("#strictness-label").inner_text() == "none"
        strictest = str(int(page.locator("#strictness").get_attribute("max")) - 1)
        page.locator("#strictness").fill(strictest)
        filtered = _docs(page, "with")
        assert filtered != without, (filtered, without)
        assert page.locator("#strictness-label").inner_text().startswith("msm ")
        assert '"knn"' in page.locator("#curl").inner_text() and "minimum_should_match" in page.locator("#curl").inner_text()
        assert page.locator("#curl").get_attribute("data-curl").startswith("curl -s -XPOST")

        # 3. qrels: the judged evidence abstract is highlighted wherever it is listed
        page.set_input_files("#qrels", str(qrels))
        page.fill("#qid", claim["_id"])
        page.locator("#strictness").fill(strictest)  # the screenshot shows a filter at work
        judged = page.locator("li.judged").evaluate_all("els => els.map(e => e.dataset.doc)")
        assert judged and set(judged) <= set(claim["relevant"]), judged
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # 4. another question: other entities, other counts
        page.fill("#question", OTHER)
        page.wait_for_function(f"!document.querySelector('#entities').innerText.includes({json.dumps(entities[:40])})",
                               timeout=120_000)
        page.wait_for_function("document.getElementById('status').textContent === ''", timeout=120_000)
        assert _counts(page) != first
        browser.close()
