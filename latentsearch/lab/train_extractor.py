"""LoRA fine-tuning of the extractor LLM on the synthetic LentEx set (`latentsearch train extractor`).

Recipe (paper §III-D): LoRA r=16, alpha=32, lr 1e-4, warmup 1 %, 1 epoch, batch 8; each example
gets one of the five paraphrased instructions at random, with small whitespace / line-break
variation; the loss is on the answer tokens only. The adapter is saved as safetensors with a
model card (data, command, metrics, time on this machine).
"""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentsearch.lab.lentex_data import DATA_DIR, Example, load_split
from latentsearch.models.extractor import DEFAULT_ADAPTER, FORMAT_FILE, INSTRUCTIONS
from latentsearch.models.llm import SMOLLM2, resolve_llm_path
from latentsearch.progress import progress_bar

_SEPARATORS = ("\n\n", "\n", "\n\n", " ", "\n \n")


@dataclass
class TrainConfig:
    model: str = SMOLLM2
    data_dir: Path = DATA_DIR
    out_dir: Path = DEFAULT_ADAPTER
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    lr: float = 1e-4
    warmup: float = 0.01
    epochs: float = 1.0
    batch_size: int = 8
    max_length: int = 256
    max_steps: int | None = None
    limit: int | None = None
    seed: int = 7
    threads: int | None = None
    prompt_format: str = "instruction-first"  # text-first: the text, then the instruction (shared-prefix)
    init_adapter: Path | None = None  # warm start: continue training this adapter (e.g. in a new prompt format)
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"])


def varied_message(ex: Example, rng: random.Random, prompt_format: str = "instruction-first") -> str:
    """An instruction drawn at random from the five, with small whitespace/line-break variation; in
    `text-first` the labelled text comes first and the instruction last (shared-prefix extraction)."""
    head = rng.choice(INSTRUCTIONS).format(text_type=ex.text_type, latent_entity_type=ex.latent_entity_type)
    sep = rng.choice(_SEPARATORS)
    label = f"{ex.text_type[:1].upper()}{ex.text_type[1:]}:"
    tail = rng.choice(("", "", " ", "\n"))
    if prompt_format == "text-first":
        return f"{label} {ex.text.strip()}{sep}{head}{tail}"
    return f"{head}{sep}{label} {ex.text.strip()}{tail}"


def encode_example(tokenizer: Any, ex: Example, rng: random.Random, max_length: int,
                   prompt_format: str = "instruction-first") -> dict[str, list[int]]:
    """input_ids + labels with the prompt masked (-100): loss on the answer tokens only."""
    message = varied_message(ex, rng, prompt_format)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                           add_generation_prompt=True)
    answer = ex.label.strip() + (tokenizer.eos_token or "")
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    overflow = len(p_ids) + len(a_ids) - max_length
    if overflow > 0:  # clip the text in the middle of the prompt, keep the chat template's tail
        # (text-first: keep the instruction after the text too)
        after_text = message[message.rindex(ex.text.strip()) + len(ex.text.strip()):]
        keep_tail = 8 + (len(tokenizer(after_text, add_special_tokens=False)["input_ids"])
                         if prompt_format == "text-first" else 0)
        p_ids = p_ids[: len(p_ids) - keep_tail - overflow] + p_ids[-keep_tail:]
    return {"input_ids": p_ids + a_ids, "labels": [-100] * len(p_ids) + a_ids}


def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    path = resolve_llm_path(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      task_type="CAUSAL_LM")
    if cfg.init_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(cfg.init_adapter), is_trainable=True)
    else:
        model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    examples = load_split("train", cfg.data_dir)
    rng.shuffle(examples)
    if cfg.limit:
        examples = examples[: cfg.limit]
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total_steps = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, round(total_steps * cfg.warmup)), total_steps)

    log: list[dict[str, float]] = []
    started = time.perf_counter()
    model.train()
    step = 0
    bar = progress_bar(progress)
    with bar as live:
        task = live.add_task("LoRA", total=total_steps) if live else None
        while step < total_steps:
            for i in range(0, len(examples), cfg.batch_size):
                if step >= total_steps:
                    break
                batch = [encode_example(tokenizer, ex, rng, cfg.max_length, cfg.prompt_format)
                         for ex in examples[i : i + cfg.batch_size]]
                width = max(len(b["input_ids"]) for b in batch)
                ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                attn = torch.zeros((len(batch), width), dtype=torch.long)
                for row, b in enumerate(batch):
                    n = len(b["input_ids"])
                    ids[row, :n] = torch.tensor(b["input_ids"])
                    labels[row, :n] = torch.tensor(b["labels"])
                    attn[row, :n] = 1
                loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                log.append({"step": step, "loss": round(float(loss), 4), "seconds": round(time.perf_counter() - started, 1)})
                if live is not None:
                    live.update(task, completed=step, description=f"LoRA loss {float(loss):.3f}")
    seconds = time.perf_counter() - started
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(cfg.out_dir, safe_serialization=True)
    (cfg.out_dir / FORMAT_FILE).write_text(json.dumps({"prompt_format": cfg.prompt_format}) + "\n")
    summary = {
        "base_model": cfg.model,
        "examples": len(examples),
        "steps": step,
        "epochs": round(step * cfg.batch_size / max(len(examples), 1), 3),
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "warmup": cfg.warmup,
        "lora": {"r": cfg.r, "alpha": cfg.alpha, "dropout": cfg.dropout, "target_modules": cfg.target_modules},
        "trainable_parameters": trainable,
        "prompt_format": cfg.prompt_format,
        "init_adapter": str(cfg.init_adapter) if cfg.init_adapter else None,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(step, 1), 2),
        "first_loss": sum(x["loss"] for x in log[:10]) / max(len(log[:10]), 1),
        "last_loss": sum(x["loss"] for x in log[-10:]) / max(len(log[-10:]), 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "command": " ".join(["latentsearch", "train", "extractor", *sys.argv[3:]]) if "train" in sys.argv else None,
    }
    (cfg.out_dir / "training_log.json").write_text(json.dumps({"summary": summary, "log": log}, indent=1))
    return summary
