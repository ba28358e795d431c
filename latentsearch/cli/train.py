"""`train ...`: the small models latentsearch ships (LoRA adapter, mention projection head)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from latentsearch.cli.options import (
    JsonOpt,
    ProgressOpt,
    WnutOpt,
    wnut_file,
)
from latentsearch.cli.output import fail, run, stdout


def extractor(
    model: Annotated[str, typer.Option(help="Base causal LM (name or folder)")] = "SmolLM2-135M-Instruct",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Adapter folder (default: the shipped one)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps (size the run to the machine)")] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N (shuffled) training examples")] = None,
    batch_size: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 1e-4,
    epochs: Annotated[float, typer.Option()] = 1.0,
    seed: Annotated[int, typer.Option()] = 7,
    prompt_format: Annotated[str, typer.Option(help="instruction-first (the original) or text-first (the text, "
                                                    "then the instruction: shared-prefix extraction)")] = "instruction-first",
    init_adapter: Annotated[Path | None, typer.Option(help="Warm start: continue training this adapter")] = None,
) -> None:
    """LoRA fine-tuning of the extractor on the synthetic LentEx set (r=16, alpha=32, lr 1e-4, warmup 1 %, 1 epoch)."""
    from latentsearch.lab.train_extractor import TrainConfig, train
    from latentsearch.models.extractor import PROMPT_FORMATS

    def body() -> None:
        cfg = TrainConfig(model=model, max_steps=max_steps, limit=limit, batch_size=batch_size, lr=lr,
                          epochs=epochs, seed=seed, prompt_format=prompt_format, init_adapter=init_adapter)
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown --prompt-format {prompt_format!r}; supported: {', '.join(PROMPT_FORMATS)}")
        if out_dir:
            cfg.out_dir = out_dir
        summary = train(cfg)
        stdout.print_json(json.dumps(summary))

    run(body)


def mention_head(
    layer: Annotated[int | None, typer.Option(help="Block whose v_proj is read; default: best v_proj block of "
                                                   "models/artifacts/mention-head-smollm2/layer_sweep.json")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training mentions")] = 40,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    margin: Annotated[float, typer.Option(help="Triplet margin on cosine distance")] = 0.3,
    heldout_every: Annotated[int, typer.Option(help="Hold out every n-th synthetic type for a zero-shot check "
                                                    "(0 = train on all)")] = 10,
    out_dir: Annotated[Path | None, typer.Option(help="Where head.safetensors + config.json go")] = None,
    wnut: WnutOpt = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Train the mention projection head (Linear(d_v,500)-SiLU-Dropout(0.1)-Linear(500,500), triplet loss).

    Data: WNUT-17 train (6 types) + the synthetic fine-grained set latentsearch/lab/data/typed_mentions (184 types);
    validation: WNUT-17 dev (the best epoch by mention-level macro R-Precision is kept). The frozen
    LLM's vectors are computed once and cached under $LATENTSEARCH_HOME/cache/mention-vectors.
    """

    def body() -> None:
        from latentsearch.lab.train_mention_head import TrainConfig, train_head
        from latentsearch.models.mention_head import ARTIFACT

        chosen = layer
        if chosen is None:
            sweep = ARTIFACT / "layer_sweep.json"
            if not sweep.is_file():
                fail("no layer given and no layer sweep found: run `latentsearch eval layer-sweep` or pass --layer")
            chosen = int(json.loads(sweep.read_text())["best"]["v_proj"])
        cfg = TrainConfig(layer=chosen, wnut_train=wnut_file(wnut, "wnut17train.conll"),
                          wnut_dev=wnut_file(wnut, "emerging.dev.conll"), epochs=epochs, batch_size=batch_size, lr=lr, margin=margin,
                          heldout_every=heldout_every, out_dir=out_dir or ARTIFACT)
        report = train_head(cfg, progress=progress)
        if as_json:
            stdout.print_json(report.model_dump_json())
            return
        dev_head = sum(report.dev_r_precision_head.values()) / len(report.dev_r_precision_head)
        dev_raw = sum(report.dev_r_precision_raw.values()) / len(report.dev_r_precision_raw)
        stdout.print(f"head saved to {cfg.out_dir} (layer {chosen}, best epoch {report.best_epoch}, "
                      f"{report.train_seconds:.0f} s training)")
        stdout.print(f"WNUT-17 dev mention-level macro R-Precision: head {dev_head:.3f} vs raw V {dev_raw:.3f}")
        if report.heldout_r_precision_head is not None:
            stdout.print(f"held-out synthetic types ({len(report.heldout_types)}): head "
                          f"{report.heldout_r_precision_head:.3f} vs raw V {report.heldout_r_precision_raw:.3f}")

    run(body)


app = typer.Typer(help="Train the small models latentsearch ships (LoRA adapters, projection heads).",
                  no_args_is_help=True)
app.command("extractor")(extractor)
app.command("mention-head")(mention_head)
