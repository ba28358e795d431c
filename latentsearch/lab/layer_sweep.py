"""Which layer and projection of the LLM holds type information? (NER Retriever §4, our model.)

For a sample of gold mentions, one full forward pass per sentence captures, at every block, the
`k_proj` and `v_proj` outputs and the block output at the mention's last token. For each
(block, site) the score is the ROC AUC of separating same-type from different-type mention pairs by
the cosine of the raw vectors. The heatmap and table go next to the head; the best V layer is the
default layer of the mention encoder.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from latentsearch.models.llm import SMOLLM2, load_llm
from latentsearch.models.mention_encoder import SITES, decoder_layers, last_token_positions, site_module
from latentsearch.models.spans import read_conll
from latentsearch.progress import progress_bar


class SweepReport(BaseModel):
    llm: str
    data: str
    sentences: int
    mentions: int
    pairs_same: int
    pairs_different: int
    auc: dict[str, list[float]]  # site -> AUC per block
    best: dict[str, int]  # site -> block with the highest AUC
    seconds: float


def pair_auc(vectors: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of cosine similarity for same-label vs different-label pairs (all pairs i < j)."""
    from sklearn.metrics import roc_auc_score

    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    iu = np.triu_indices(len(v), k=1)
    same = (labels[:, None] == labels[None, :])[iu]
    return float(roc_auc_score(same, sims[iu]))


def capture_all(texts: list[str], spans: list[list], llm: str = SMOLLM2, batch_size: int = 8,
                progress: bool = True) -> dict[str, np.ndarray]:
    """site -> array (n_layers, n_mentions, dim) from full forward passes (hooks read, never stop)."""
    import torch

    lm = load_llm(llm)
    n_layers = len(decoder_layers(lm.model))
    store: dict[tuple[str, int], list[np.ndarray]] = {(s, L): [] for s in SITES for L in range(n_layers)}
    current: dict[tuple[str, int], np.ndarray] = {}
    handles = []
    for L in range(n_layers):
        for s in SITES:
            def hook(_m, _i, output, key=(s, L)):
                current[key] = (output[0] if isinstance(output, tuple) else output).float().numpy()
            handles.append(site_module(lm.model, L, s).register_forward_hook(hook))
    try:
        with progress_bar(progress) as live:
            task = live.add_task("layer sweep forward passes", total=len(texts)) if live else None
            for b in range(0, len(texts), batch_size):
                bt, bs = texts[b : b + batch_size], spans[b : b + batch_size]
                enc = lm.tokenizer(bt, return_offsets_mapping=True, padding=True, return_tensors="pt",
                                   padding_side="right")
                offsets = enc.pop("offset_mapping").tolist()
                with torch.inference_mode():
                    lm.model.model(**enc, use_cache=False)
                for row, sp in enumerate(bs):
                    pos = last_token_positions(offsets[row], sp)
                    for key, arr in current.items():
                        store[key].append(arr[row, pos])
                if live:
                    live.update(task, advance=len(bt))
    finally:
        for h in handles:
            h.remove()
    return {s: np.stack([np.concatenate(store[(s, L)]) for L in range(n_layers)]) for s in SITES}


def run_sweep(conll: Path, out_dir: Path, n_sentences: int = 300, llm: str = SMOLLM2, seed: int = 0,
              progress: bool = True) -> SweepReport:
    started = time.perf_counter()
    sents = [s for s in read_conll(conll) if s.spans]
    random.Random(seed).shuffle(sents)
    sents = sents[:n_sentences]
    labels = np.array([t for s in sents for t in s.types])
    caps = capture_all([s.text for s in sents], [s.spans for s in sents], llm, progress=progress)
    auc = {site: [round(pair_auc(caps[site][L], labels), 4) for L in range(caps[site].shape[0])] for site in SITES}
    same = int(sum(np.sum(labels == t) * (np.sum(labels == t) - 1) // 2 for t in set(labels)))
    total = len(labels) * (len(labels) - 1) // 2
    report = SweepReport(llm=llm, data=str(conll), sentences=len(sents), mentions=len(labels), pairs_same=same,
                         pairs_different=total - same, auc=auc,
                         best={s: int(np.argmax(v)) for s, v in auc.items()},
                         seconds=round(time.perf_counter() - started, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "layer_sweep.json").write_text(report.model_dump_json(indent=2) + "\n")
    (out_dir / "layer_sweep.md").write_text(sweep_table(report))
    plot_heatmap(report, out_dir / "layer_sweep.png")
    return report


def sweep_table(report: SweepReport) -> str:
    sites = list(report.auc)
    lines = ["| block | " + " | ".join(sites) + " |", "|---:|" + "---:|" * len(sites)]
    for L in range(len(report.auc[sites[0]])):
        cells = []
        for s in sites:
            v = f"{report.auc[s][L]:.3f}"
            cells.append(f"**{v}**" if report.best[s] == L else v)
        lines.append(f"| {L} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_heatmap(report: SweepReport, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the layer-sweep heatmap needs matplotlib: pip install 'latentsearch[ml]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = list(report.auc)
    grid = np.array([report.auc[s] for s in sites])
    fig, ax = plt.subplots(figsize=(12, 2.6))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(sites)), sites)
    ax.set_xticks(range(grid.shape[1]))
    ax.set_xlabel("block")
    ax.set_title(f"same-type vs different-type pair AUC ({report.llm}, {report.mentions} WNUT-17 train mentions)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(report: SweepReport) -> dict[str, object]:
    return json.loads(report.model_dump_json(include={"best", "mentions", "seconds"}))
