"""Latent entity extraction (LentEx): name the entities a text implies, with a small instruction-tuned LLM.

    extractor = get_extractor()                      # SmolLM2-135M-Instruct + our LoRA adapter
    extractor.extract(["The striker curled it into the top corner..."], "sports commentary", "sport name")
    -> [["football"]]

Prompts are the paper's five paraphrased instructions through the model's chat template; decoding
is greedy with a short token budget; answers are normalised (first line, split lists, lowercase,
dedupe, at most `max_values`). With `options` (the supervised variant) every option is scored by
its mean token log-likelihood and the best one is returned: never free text.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from latentsearch.models.llm import SMOLLM2, LoadedLM, load_llm, resolve_llm_path

INSTRUCTIONS: tuple[str, ...] = (
    "From the given {text_type}, determine the {latent_entity_type}.",
    "Based on the provided {text_type}, identify the {latent_entity_type}.",
    "From the specified {text_type}, ascertain the {latent_entity_type}.",
    "Using the given {text_type}, pinpoint the {latent_entity_type}.",
    "Examine the {text_type} provided and determine the {latent_entity_type}.",
)
log = logging.getLogger(__name__)
DEFAULT_ADAPTER = Path(__file__).parent / "artifacts" / "lentex-smollm2-lora"

_PREFIX = re.compile(
    r"^(answer|the answer is|output|label|entity|latent entity|the( \w+){1,4} (is|are)|it is|this is)\s*[:\-]?\s*",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"\s*(?:[,;/|\n]|\s+&\s+)\s*")


def user_message(
    text: str, text_type: str, latent_entity_type: str, instruction: int = 0, options: Sequence[str] | None = None
) -> str:
    """The user turn: one of the five instructions, then the text (and the options, if any)."""
    head = INSTRUCTIONS[instruction % len(INSTRUCTIONS)].format(
        text_type=text_type, latent_entity_type=latent_entity_type
    )
    body = f"{head}\n\n{text_type[:1].upper()}{text_type[1:]}: {text.strip()}"
    if options:
        body += "\n\nAnswer with one of: " + "; ".join(options)
    return body


def normalize_answer(raw: str, max_values: int = 3) -> list[str]:
    """Model output -> clean values: strip prefixes/quotes/punctuation, split lists, lowercase, dedupe."""
    lines = [line for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        return []
    text = lines[0]  # the answer; what follows is the model explaining itself
    values: list[str] = []
    for part in _SPLIT.split(text):
        v = _PREFIX.sub("", part.strip())
        v = v.strip(" \t\"'`*.:;!?()[]{}").lower()
        v = re.sub(r"\s+", " ", v)
        if not v or len(v.split()) > 8 or v in values:
            continue
        values.append(v)
        if len(values) >= max_values:
            break
    return values


class LatentEntityExtractor:
    """Batched latent entity extraction with any chat causal LM (optionally + a LoRA adapter)."""

    def __init__(
        self,
        model: str = SMOLLM2,
        adapter: str | Path | None = "default",
        device: str = "cpu",
        max_new_tokens: int = 12,
        max_input_tokens: int = 384,
        max_values: int = 3,
        batch_size: int = 16,
    ):
        self.model_name = model
        self.adapter = _resolve_adapter(adapter)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_values = max_values
        self.batch_size = batch_size
        self.lm = self._load()

    def _load(self) -> LoadedLM:
        if self.adapter is None:
            return load_llm(self.model_name, self.device)  # shared with other users of the base model
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_llm_path(self.model_name)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        base = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32 if self.device == "cpu" else torch.bfloat16
        )
        # merged copy: the base model in the registry stays untouched for the mention encoder
        model = PeftModel.from_pretrained(base, str(self.adapter)).merge_and_unload()
        model.to(self.device).eval()
        return LoadedLM(name=f"{self.model_name}+{self.adapter.name}", model=model, tokenizer=tokenizer, device=self.device)

    @property
    def fingerprint(self) -> str:
        """Identifies outputs for the content cache: model, adapter version, decoding settings."""
        adapter = "base"
        if self.adapter is not None:
            weights = self.adapter / "adapter_model.safetensors"
            digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.exists() else "none"
            adapter = f"{self.adapter.name}:{digest}"  # retraining changes the weights, hence the cache key
        return f"lentex:{self.model_name}:{adapter}:{self.max_new_tokens}:{self.max_input_tokens}:{self.max_values}"

    def _clip(self, text: str) -> str:
        ids = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_input_tokens:
            return text
        return self.lm.tokenizer.decode(ids[: self.max_input_tokens])

    def prompt(self, text: str, text_type: str, latent_entity_type: str, instruction: int = 0,
               options: Sequence[str] | None = None) -> str:
        message = user_message(self._clip(text), text_type, latent_entity_type, instruction, options)
        return self.lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy decoding of a batch of full prompts (left padding)."""
        import torch

        tok = self.lm.tokenizer
        outputs: list[str] = []
        tok.padding_side = "left"
        for i in range(0, len(prompts), self.batch_size):
            batch = list(prompts[i : i + self.batch_size])
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                out = self.lm.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(tok.batch_decode(new, skip_special_tokens=True))
        return outputs

    def extract(
        self,
        texts: Sequence[str],
        text_type: str,
        latent_entity_type: str,
        options: Sequence[str] | None = None,
        instruction: int = 0,
    ) -> list[list[str]]:
        """One list of values per text (empty when the model gives nothing usable)."""
        if not texts:
            return []
        if options:
            return [[o] for o in self.choose(texts, text_type, latent_entity_type, options, instruction)]
        prompts = [self.prompt(t, text_type, latent_entity_type, instruction) for t in texts]
        return [normalize_answer(raw, self.max_values) for raw in self.generate(prompts)]

    def choose(
        self, texts: Sequence[str], text_type: str, latent_entity_type: str, options: Sequence[str],
        instruction: int = 0,
    ) -> list[str]:
        """Constrained answers: the option with the highest mean token log-likelihood per text."""
        import torch

        tok = self.lm.tokenizer
        tok.padding_side = "right"
        eos = tok.eos_token or ""
        best: list[str] = []
        for text in texts:
            prompt = self.prompt(text, text_type, latent_entity_type, instruction, options)
            n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
            seqs = [prompt + opt + eos for opt in options]
            enc = tok(seqs, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                logits = self.lm.model(**enc).logits[:, :-1].float()
            targets = enc["input_ids"][:, 1:]
            logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            mask = enc["attention_mask"][:, 1:].clone()
            mask[:, : n_prompt - 1] = 0  # score the option (and its end token) only
            scores = (logp * mask).sum(1) / mask.sum(1).clamp(min=1)
            best.append(options[int(scores.argmax())])
        return best


def _resolve_adapter(adapter: str | Path | None) -> Path | None:
    if adapter is None or adapter == "none":
        return None
    if adapter == "default":
        if (DEFAULT_ADAPTER / "adapter_config.json").is_file():
            return DEFAULT_ADAPTER
        log.warning("no trained LentEx adapter at %s: extracting with the base model "
                    "(train one with `latentsearch train extractor`)", DEFAULT_ADAPTER)
        return None
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path} is not a LoRA adapter folder (no adapter_config.json)")
    return path
