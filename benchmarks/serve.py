"""Model-server load benchmark: /v1/embeddings throughput and latency, with and without micro-batching.

Starts `latentsearch serve` twice on loopback (`--max-batch 32`, then `--max-batch 1` = one model call
per request), and for each drives closed-loop load at several concurrencies: N clients, each sending
one single-text request (SciFact claims) as soon as its previous one returned, for `--duration`
seconds after a short warm-up. Prints requests/s, p50/p95 latency, the server's CPU time per request
(user + system of the server process: far less sensitive than wall time to other load on the
machine) and the mean inputs per model call (from the server's own /metrics), then the batched /
unbatched ratios.

    .venv/bin/python benchmarks/serve.py                         # concurrency 1, 8, 32; 10 s per cell
    .venv/bin/python benchmarks/serve.py --duration 3 --concurrency 1,8

The load generator shares the machine with the server (on our 2-core box it takes a share of the
CPU too), so absolute figures are lower bounds; the ratio is the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
QUERIES = REPO / "latentsearch" / "data" / "scifact-sample-queries.jsonl"


def _texts() -> list[str]:
    rows = [json.loads(line) for line in QUERIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r.get("text") or r.get("query") or r.get("claim") for r in rows if r]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, max_batch: int, wait_ms: float):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "latentsearch.cli", "serve", "--port", str(self.port), "--max-batch", str(max_batch),
               "--batch-wait-ms", str(wait_ms), "--preload", "embeddings"]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> Server:
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not start in 180 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def cpu_seconds(self) -> float:
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def batch_stats(self) -> tuple[float, float]:
        """(model calls, inputs) so far for the embeddings model, from /metrics."""
        calls = items = 0.0
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith('latentsearch_batch_items_count{model="embeddings"}'):
                calls = float(line.split()[-1])
            elif line.startswith('latentsearch_batch_items_sum{model="embeddings"}'):
                items = float(line.split()[-1])
        return calls, items


async def _drive(url: str, texts: list[str], concurrency: int, warmup: float, duration: float) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + duration

        async def worker(k: int) -> None:
            i = k
            while (now := time.perf_counter()) < stop_at:
                r = await client.post("/v1/embeddings", json={"input": texts[i % len(texts)]})
                r.raise_for_status()
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    parser.add_argument("--max-batch", type=int, default=32, help="the batched server's --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    texts = _texts()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    for label, max_batch in (("batched", args.max_batch), ("unbatched", 1)):
        with Server(max_batch, args.batch_wait_ms) as server:
            for c in levels:
                calls0, items0 = server.batch_stats()
                cpu0 = server.cpu_seconds()
                lat = asyncio.run(_drive(server.url, texts, c, args.warmup, args.duration))
                cpu1 = server.cpu_seconds()
                calls1, items1 = server.batch_stats()
                served = items1 - items0  # warm-up requests included: CPU covers them too
                ms = np.array(lat) * 1000
                rows.append({"mode": label, "max_batch": max_batch, "concurrency": c, "requests": len(lat),
                             "rps": round(len(lat) / args.duration, 1),
                             "p50_ms": round(float(np.percentile(ms, 50)), 1),
                             "p95_ms": round(float(np.percentile(ms, 95)), 1),
                             "server_cpu_ms_per_request": round(1000 * (cpu1 - cpu0) / max(1.0, served), 1),
                             "inputs_per_call": round(served / max(1.0, calls1 - calls0), 2)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    print(f"\n/v1/embeddings, all-MiniLM-L6-v2, one text per request, {args.duration:g} s per cell, "
          f"batch wait {args.batch_wait_ms:g} ms, {os.cpu_count()} CPU cores shared with the load generator\n")
    print(f"{'mode':<10} {'max_batch':>9} {'conc':>5} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'CPU ms/req':>10} {'inputs/call':>11}")
    for r in rows:
        print(f"{r['mode']:<10} {r['max_batch']:>9} {r['concurrency']:>5} {r['requests']:>9} {r['rps']:>8} "
              f"{r['p50_ms']:>8} {r['p95_ms']:>8} {r['server_cpu_ms_per_request']:>10} {r['inputs_per_call']:>11}")
    print("\nbatched / unbatched:")
    for c in levels:
        b = next(r for r in rows if r["mode"] == "batched" and r["concurrency"] == c)
        u = next(r for r in rows if r["mode"] == "unbatched" and r["concurrency"] == c)
        cpu = u["server_cpu_ms_per_request"] / max(b["server_cpu_ms_per_request"], 1e-9)
        print(f"  concurrency {c:>3}: throughput {b['rps'] / u['rps']:.2f}x, server CPU per request {cpu:.2f}x less, "
              f"p95 {b['p95_ms']} vs {u['p95_ms']} ms")
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
