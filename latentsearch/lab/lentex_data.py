"""Synthetic training data for latent entity extraction, the LentEx way (paper §III-C, Table I).

Three steps: (1) domain generation: (text_type, latent_entity_type) pairs, new ones proposed from
random subsets of earlier ones, duplicates removed; (2) instance generation: per domain, texts and
their implied entity in one call; (3) filters: drop pairs whose Rouge-L(text, label) > 0.5 (the
entity must be implied, not written) and near-identical texts. The teacher is pluggable: any
OpenAI-compatible chat endpoint or a local transformers model.

The set shipped in `latentsearch/lab/data/lentex/` was authored by hand-guided LLM assistants following the
same three steps (see its DATA_CARD.md); `build_from_parts` runs step 3 and the splits on it.
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

DATA_DIR = Path(__file__).parent / "data" / "lentex"

DOMAIN_PROMPT = (
    "Generate a synthetic data dictionary containing {n} example entries. For each entry, the input should "
    "describe a broad category of text, and the output should specify a general category of latent entities. "
    "Latent entities are those that can be inferred from a text, even though they are not explicitly "
    "mentioned in the text. Ensure that the examples span a diverse range of topics, including but not "
    "limited to entertainment, education, technology, and health. The output categories should be broad, "
    "general, in 1-3 words, like 'movie genre' or 'product type', indicative of the kind of inference a "
    "reader can make from the given text type. Example: seed_task_dict = {seed}"
)
INSTANCE_PROMPT = (
    "Generate a list of {n} detailed instances of the text type \"{text_type}\", each with its "
    "corresponding {latent_entity_type}. For each instance, provide comprehensive content that is "
    "representative of its category, ensuring clarity, relevance, and authenticity. The {latent_entity_type} "
    "must be inferable from the text but never written in it. The instances should cover a diverse range of "
    "subjects, showcasing unique and specific characteristics of each category. Format the output as "
    "follows: each instance is a dictionary with two keys: \"text\" (the full content of the instance) and "
    "\"label\" (its {latent_entity_type}, 1-5 words). Write one dictionary per line in JSONL format and "
    "encapsulate the output in the tag <code>{{rows}}</code>."
)
SEED_DOMAINS = {
    "sports commentary": "sport name",
    "Google place review": "place category",
    "book summary": "book genre",
    "legal case summary": "legal case type",
}


class Domain(BaseModel):
    domain: str
    text_type: str
    latent_entity_type: str
    category: str = "general"


class Example(BaseModel):
    domain: str
    text_type: str
    latent_entity_type: str
    text: str
    label: str
    split: str | None = Field(None, description="train | test_seen | test_unseen")


# ---------------------------------------------------------------- teachers


class Teacher(Protocol):
    def complete(self, prompt: str, *, temperature: float = 0.9, max_tokens: int = 2048) -> str: ...


@dataclass
class OpenAITeacher:
    """Any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, TGI, llama.cpp, OpenAI, ours)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0

    def complete(self, prompt: str, *, temperature: float = 0.9, max_tokens: int = 2048) -> str:
        import httpx

        url = self.base_url.rstrip("/")
        url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "temperature": temperature, "max_tokens": max_tokens}
        resp = httpx.post(url, json=payload, headers=headers, timeout=self.timeout_s)
        if resp.status_code >= 400:
            raise RuntimeError(f"teacher at {url} answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()["choices"][0]["message"]["content"]


@dataclass
class LocalTeacher:
    """A local transformers chat model as teacher (sampling)."""

    model: str = "SmolLM2-135M-Instruct"
    device: str = "cpu"
    seed: int = 0

    def complete(self, prompt: str, *, temperature: float = 0.9, max_tokens: int = 2048) -> str:
        import torch

        from latentsearch.models.llm import load_llm

        lm = load_llm(self.model, self.device)
        text = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
        enc = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.device)
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            out = lm.model.generate(**enc, **sampling, max_new_tokens=max_tokens, pad_token_id=lm.tokenizer.pad_token_id)
        return lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


# ---------------------------------------------------------------- step 1: domains


def _slug(text_type: str, latent_entity_type: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", f"{text_type}__{latent_entity_type}".lower()).strip("_")


def parse_domain_dict(reply: str) -> dict[str, str]:
    """The dictionary a teacher wrote (JSON or a Python literal, possibly after `name =`)."""
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    if not match:
        return {}
    blob = match.group(0)
    for loader in (json.loads, ast.literal_eval):
        try:
            data = loader(blob)
        except (ValueError, SyntaxError):
            continue
        if isinstance(data, dict):
            return {str(k).strip(): str(v).strip() for k, v in data.items() if str(k).strip() and str(v).strip()}
    return {}


def generate_domains(teacher: Teacher, *, rounds: int = 10, per_round: int = 10, seed_size: int = 4,
                     seed: int = 0, start: dict[str, str] | None = None) -> list[Domain]:
    """Step 1: grow the domain list; each round shows a random subset of the domains so far."""
    rng = random.Random(seed)
    pool = dict(start or SEED_DOMAINS)
    seen = {_slug(k, v) for k, v in pool.items()}
    for _ in range(rounds):
        sample = dict(rng.sample(sorted(pool.items()), min(seed_size, len(pool))))
        reply = teacher.complete(DOMAIN_PROMPT.format(n=per_round, seed=json.dumps(sample)))
        for text_type, entity in parse_domain_dict(reply).items():
            entity = entity.replace("_", " ")
            slug = _slug(text_type, entity)
            if slug not in seen:
                seen.add(slug)
                pool[text_type] = entity
    return [Domain(domain=_slug(k, v), text_type=k, latent_entity_type=v) for k, v in pool.items()]


# ---------------------------------------------------------------- step 2: instances


def parse_instances(reply: str) -> list[tuple[str, str]]:
    """(text, label) pairs from a teacher reply: JSON lines, optionally inside <code>...</code>.
    Accepts the paper's own key names (text under "text_type", label under "latent_entity_type")."""
    match = re.search(r"<code>(.*?)</code>", reply, re.DOTALL)
    body = match.group(1) if match else reply
    pairs = []
    for line in body.splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        text = obj.get("text") or obj.get("text_type")
        label = obj.get("label") or obj.get("latent_entity_type")
        if isinstance(text, str) and isinstance(label, str) and text.strip() and label.strip():
            pairs.append((text.strip(), label.strip()))
    return pairs


def generate_instances(teacher: Teacher, domain: Domain, *, n: int = 10, rounds: int = 1) -> list[Example]:
    """Step 2: texts and labels for one domain, `n` per teacher call."""
    out = []
    for _ in range(rounds):
        reply = teacher.complete(INSTANCE_PROMPT.format(n=n, text_type=domain.text_type,
                                                        latent_entity_type=domain.latent_entity_type))
        out.extend(Example(domain=domain.domain, text_type=domain.text_type,
                           latent_entity_type=domain.latent_entity_type, text=t, label=lab)
                   for t, lab in parse_instances(reply))
    return out


# ---------------------------------------------------------------- step 3: filters


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(a: str, b: str) -> float:
    """Rouge-L F-measure (rouge-score's tokenisation: lowercase alphanumeric words)."""
    return _rouge().score(a, b)["rougeL"].fmeasure


def _norm_text(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


@dataclass
class FilterStats:
    kept: int = 0
    dropped_label_in_text: int = 0
    dropped_near_duplicate: int = 0
    dropped_empty: int = 0


def filter_examples(examples: Iterable[Example], *, max_rouge: float = 0.5,
                    near_duplicate_rouge: float = 0.8) -> tuple[list[Example], FilterStats]:
    """Step 3: the entity must be implied (Rouge-L(text, label) <= max_rouge); near-identical texts
    (same normalised text, or Rouge-L between texts of one domain > near_duplicate_rouge) go."""
    stats = FilterStats()
    kept: list[Example] = []
    by_domain: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for ex in examples:
        if not ex.text.strip() or not ex.label.strip():
            stats.dropped_empty += 1
            continue
        if rouge_l(ex.text, ex.label) > max_rouge:
            stats.dropped_label_in_text += 1
            continue
        norm = _norm_text(ex.text)
        if norm in seen or any(rouge_l(norm, other) > near_duplicate_rouge for other in by_domain[ex.domain]):
            stats.dropped_near_duplicate += 1
            continue
        seen.add(norm)
        by_domain[ex.domain].append(norm)
        kept.append(ex)
    stats.kept = len(kept)
    return kept, stats


# ---------------------------------------------------------------- the shipped set


def read_parts(parts_dir: Path) -> tuple[list[Domain], list[Example]]:
    domains: dict[str, Domain] = {}
    examples: list[Example] = []
    for part in sorted(parts_dir.glob("*.jsonl")):
        for n, line in enumerate(part.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj.get("kind") == "domain":
                d = Domain(domain=obj["domain"], text_type=obj["text_type"],
                           latent_entity_type=obj["latent_entity_type"], category=obj.get("category", "general"))
                if d.domain in domains:
                    raise ValueError(f"{part.name}:{n}: domain {d.domain} defined twice")
                domains[d.domain] = d
            else:
                d = domains.get(obj["domain"])
                if d is None:
                    raise ValueError(f"{part.name}:{n}: example of undefined domain {obj['domain']}")
                examples.append(Example(domain=d.domain, text_type=d.text_type,
                                        latent_entity_type=d.latent_entity_type, text=obj["text"], label=obj["label"]))
    pairs = Counter((d.text_type.lower(), d.latent_entity_type.lower()) for d in domains.values())
    dupes = [p for p, c in pairs.items() if c > 1]
    if dupes:
        raise ValueError(f"duplicate (text_type, latent_entity_type) pairs: {dupes}")
    return list(domains.values()), examples


# Domains kept out of training entirely (the unseen-domain test set); chosen to span categories and
# never the ones our own indices use (biomedical abstract, newsgroup post).
_PROTECTED_TEXT_TYPES = {"biomedical abstract", "newsgroup post"}


def split(domains: Sequence[Domain], examples: Sequence[Example], *, unseen: int = 12, seen_test: float = 0.1,
          seed: int = 13) -> list[Example]:
    """Assign `split`: whole domains to test_unseen (spread over categories), then a share of the
    rest of each domain's examples to test_seen."""
    rng = random.Random(seed)
    by_cat: dict[str, list[Domain]] = defaultdict(list)
    for d in sorted(domains, key=lambda d: d.domain):
        if d.text_type.lower() not in _PROTECTED_TEXT_TYPES:
            by_cat[d.category].append(d)
    for cands in by_cat.values():
        rng.shuffle(cands)
    held: set[str] = set()
    cats = sorted(by_cat)
    while len(held) < unseen and any(by_cat.values()):
        for cat in cats:
            if by_cat[cat] and len(held) < unseen:
                held.add(by_cat[cat].pop().domain)
    out: list[Example] = []
    per_domain: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        per_domain[ex.domain].append(ex)
    for dom in sorted(per_domain):
        items = per_domain[dom][:]
        if dom in held:
            out.extend(ex.model_copy(update={"split": "test_unseen"}) for ex in items)
            continue
        rng.shuffle(items)
        n_test = max(1, round(len(items) * seen_test))
        out.extend(ex.model_copy(update={"split": "test_seen"}) for ex in items[:n_test])
        out.extend(ex.model_copy(update={"split": "train"}) for ex in items[n_test:])
    return out


def build_from_parts(parts_dir: Path = DATA_DIR / "parts", out_dir: Path = DATA_DIR) -> dict[str, Any]:
    """Filter + split the authored parts into train / test_seen / test_unseen JSONL; returns stats."""
    domains, examples = read_parts(parts_dir)
    kept, stats = filter_examples(examples)
    rows = split(domains, kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    files = {name: (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") for name in ("train", "test_seen", "test_unseen")}
    try:
        for ex in rows:
            files[ex.split].write(ex.model_dump_json() + "\n")
            counts[ex.split] += 1
    finally:
        for fh in files.values():
            fh.close()
    with (out_dir / "domains.jsonl").open("w", encoding="utf-8") as fh:
        for d in sorted(domains, key=lambda d: d.domain):
            fh.write(d.model_dump_json() + "\n")
    unseen_domains = sorted({ex.domain for ex in rows if ex.split == "test_unseen"})
    return {
        "domains": len(domains),
        "examples_authored": len(examples),
        "examples_kept": stats.kept,
        "dropped_label_in_text": stats.dropped_label_in_text,
        "dropped_near_duplicate": stats.dropped_near_duplicate,
        "dropped_empty": stats.dropped_empty,
        "splits": dict(counts),
        "unseen_domains": unseen_domains,
    }


def load_split(name: str, data_dir: Path = DATA_DIR) -> list[Example]:
    path = data_dir / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build it with `latentsearch data lentex`")
    return [Example.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
