"""Mutation check (run by hand, not part of the suite): flip one named decision at a time in the
product code, run the tests that guard it, and require them to FAIL; then restore the file.

    .venv/bin/python tests/mutation_check.py            # all mutants
    .venv/bin/python tests/mutation_check.py -k boost   # those whose name contains "boost"

Prints one row per mutant (killed = the tests failed, as they must; SURVIVED = a blind spot) and
exits 1 if any survived. Each mutant names the exact text it replaces, which must occur once, so a
refactor that moves the code makes the check fail loudly instead of testing nothing. Files are
restored in a `finally`, and the check refuses to start on a file with uncommitted changes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


STRICT = ("tests/test_strictness.py",)
FUSION = ("tests/test_fusion.py",)
AUTH = ("tests/test_auth.py",)
STATUS = ("tests/test_status_semantics.py",)

MUTANTS = [
    Mutant("auto: >= min_hits becomes > (the floor rule)", "query/rewriter.py",
           "rep.above_floor >= opts.min_hits", "rep.above_floor > opts.min_hits", STRICT),
    Mutant("floor count: a hit AT the floor no longer counts", "query/rewriter.py",
           "sum(1 for x in h if floor is None or x.score >= floor)",
           "sum(1 for x in h if floor is None or x.score > floor)", STRICT),
    Mutant("floor_rank off by one (rank k -> index k)", "query/rewriter.py",
           "return unfiltered[min(opts.floor_rank, len(unfiltered)) - 1].score",
           "return unfiltered[min(opts.floor_rank, len(unfiltered) - 1)].score", STRICT),
    Mutant("auto ladder runs loosest first", "query/rewriter.py",
           "return [*range(n, 0, -1), None]", "return [*range(1, n + 1), None]", STRICT),
    Mutant("boost sign flipped", "query/rewriter.py",
           'h.model_copy(update={"score": h.score + bonus})', 'h.model_copy(update={"score": h.score - bonus})',
           STRICT),
    Mutant("tier promotes filtered hits below the floor too", "query/rewriter.py",
           "keep = [h for h in level if floor is None or h.score >= floor]", "keep = list(level)", STRICT),
    Mutant("nearest-value threshold: >= becomes >", "query/rewriter.py",
           "sims[i] >= min_sim", "sims[i] > min_sim", STRICT),
    Mutant("min_max normalisation direction reversed", "latentsearch/backends/embedded/executor.py",
           "np.maximum((s - lo) / (hi - lo), 0.001)", "np.maximum((hi - s) / (hi - lo), 0.001)", FUSION),
    Mutant("min_max floor 0.001 becomes 0", "latentsearch/backends/embedded/executor.py",
           "np.maximum((s - lo) / (hi - lo), 0.001)", "np.maximum((s - lo) / (hi - lo), 0.0)", FUSION),
    Mutant("l2 normalisation divides by the L1 norm", "latentsearch/backends/embedded/executor.py",
           "s / (np.sqrt(np.sum(s**2)) or 1.0)", "s / (np.sum(np.abs(s)) or 1.0)", FUSION),
    Mutant("fusion weights applied in reverse order", "latentsearch/backends/embedded/executor.py",
           'w = np.asarray(cfg["weights"])[:, None] * present', 'w = np.asarray(cfg["weights"][::-1])[:, None] * present',
           FUSION),
    Mutant("harmonic mean computed as arithmetic", "latentsearch/backends/embedded/executor.py",
           "score = sw / (w / np.where(present, np.maximum(vals, 1e-9), 1.0)).sum(axis=0)",
           "score = (w * vals).sum(axis=0) / sw", FUSION),
    Mutant("RRF ranks start at 0 (rank constant off by one)", "latentsearch/backends/embedded/executor.py",
           'cfg["rank_constant"] + np.arange(1, top.size + 1)', 'cfg["rank_constant"] + np.arange(0, top.size)', FUSION),
    Mutant("z_score silently treated as min_max", "latentsearch/backends/embedded/executor.py",
           "if cfg[\"technique\"] not in NORMALIZATIONS:", "if False:", FUSION),
    Mutant("/search router loses its key dependency", "onnx_export/serve/search_api.py",
           "dependencies=[Depends(require_api_key)]", "dependencies=[]", AUTH),
    Mutant("/metrics loses its key dependency", "onnx_export/serve/ops_api.py",
           'summary="Prometheus metrics", dependencies=[Depends(require_api_key)]',
           'summary="Prometheus metrics", dependencies=[]', AUTH),
    Mutant("the bearer token is ignored", "onnx_export/serve/security.py",
           "given = header_key or (credentials.credentials if credentials else None)", "given = header_key", AUTH),
    Mutant("overwrite reported as 201 created", "latentsearch/backends/embedded/backend.py",
           'BulkItemResult(doc_id, 200, result="updated") if doc_id in exists',
           'BulkItemResult(doc_id, 201, result="created") if doc_id in exists', STATUS),
    Mutant("delete of a missing document is 200", "latentsearch/backends/embedded/backend.py",
           'results[i] = BulkItemResult(doc_id, 404, result="not_found")',
           'results[i] = BulkItemResult(doc_id, 200, result="deleted")', STATUS),
    Mutant("create of an existing id overwrites", "latentsearch/backends/embedded/backend.py",
           'if action.op == "create" and doc_id in exists:', 'if False:', STATUS),
]


def run_tests(tests: tuple[str, ...]) -> tuple[int, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    return proc.returncode, time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    dirty = subprocess.run(["git", "status", "--porcelain", *{m.file for m in chosen}], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print(f"refusing to mutate files with uncommitted changes:\n{dirty}")
        return 2
    for tests in sorted({m.tests for m in chosen}):  # the unmutated code must pass, or "killed" means nothing
        rc, _ = run_tests(tests)
        if rc != 0:
            print(f"baseline fails: {' '.join(tests)} (rc {rc}); fix it before checking mutants")
            return 2
    print("| # | mutant | file | tests | result | s |\n|---|---|---|---|---|---|")
    survived = 0
    for i, m in enumerate(chosen, 1):
        path = ROOT / m.file
        original = path.read_text(encoding="utf-8")
        count = original.count(m.old)
        if count != 1:
            print(f"| {i} | {m.name} | {m.file} | - | TEXT FOUND {count} TIMES | - |")
            survived += 1
            continue
        try:
            path.write_text(original.replace(m.old, m.new), encoding="utf-8")
            rc, seconds = run_tests(m.tests)
        finally:
            path.write_text(original, encoding="utf-8")
        result = "killed" if rc == 1 else ("SURVIVED" if rc == 0 else f"error rc {rc}")
        survived += rc != 1
        print(f"| {i} | {m.name} | {m.file} | {' '.join(Path(t).name for t in m.tests)} | {result} | {seconds:.0f} |",
              flush=True)
    print(f"\n{len(chosen) - survived} of {len(chosen)} mutants killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
