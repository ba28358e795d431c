"""`latentsearch demo` (what `make demo` runs) shows the product: latent entities, the values they mapped
to, the strictness ladder, the chosen level and why, and dense vs rewritten ranks for 3 claims, with no
third-party warning line anywhere in its output (stdout and stderr). A real run on a private embedded db:
SmolLM2 extracts title entities, so it is `slow` (a few minutes on 2 cores, seconds with a warm cache)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

#: Lines third-party libraries print on a normal run (lance's Rust logger, Python warnings, transformers).
THIRD_PARTY = re.compile(r"\bWARN\b|Warning:|warnings\.warn|legacy behaviou?r|No existing dataset|"
                         r"Package would be ignored|\bDEBUG\b|^\s*INFO\b", re.IGNORECASE | re.MULTILINE)


def test_demo_shows_latent_filtering_for_three_claims_without_warnings(tmp_path: Path) -> None:
    env = {**os.environ, "LATENTSEARCH_BACKEND__EMBEDDED_PATH": str(tmp_path / "db"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "120"}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-m", "latentsearch.cli", "demo", "--index", "demo-test"], env=env,
                          capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert not THIRD_PARTY.findall(out), [ln for ln in out.splitlines() if THIRD_PARTY.search(ln)]
    assert "latent types" in done.stdout and "per chunk" in done.stderr  # per-chunk progress on stderr
    claims = done.stdout.split("\nclaim ")[1:]
    assert len(claims) == 3, done.stdout
    for block in claims:
        assert re.search(r"entity \w+: “[^”]+” → ", block), block  # extracted entity → mapped values
        assert "strictness ladder: " in block and "none: " in block and "←" in block
        assert "chosen: " in block
        assert "dense k-NN" in block and "rewritten" in block and "dense rank" in block
    # at least one claim's entities map to index values, so a filter level exists beyond `none`
    assert re.search(r"msm \d+: \d+ docs", done.stdout), done.stdout
