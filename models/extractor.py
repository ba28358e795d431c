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
# text-first (shared-prefix extraction); its extraction eval is within a point of the instruction-first one
DEFAULT_ADAPTER = Path(__file__).parent / "artifacts" / "lentex-smollm2-lora-textfirst"
INSTRUCTION_FIRST_ADAPTER = Path(__file__).parent / "artifacts" / "lentex-smollm2-lora"  # the paper's prompt order

_PREFIX = re.compile(
    r"^(answer|the answer is|output|label|entity|latent entity|the( \w+){1,4} (is|are)|it is|this is)\s*[:\-]?\s*",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"\s*(?:[,;/|\n]|\s+&\s+)\s*")


PROMPT_FORMATS = ("instruction-first", "text-first")
FORMAT_FILE = "lentex.json"  # in an adapter folder: {"prompt_format": ...}; absent = instruction-first


def message_parts(
    text: str, text_type: str, latent_entity_type: str, instruction: int = 0, options: Sequence[str] | None = None,
    prompt_format: str = "instruction-first",
) -> tuple[str, str]:
    """The user turn as (head, tail). `instruction-first` (the original adapter's): the instruction, then the
    text. `text-first`: the text, then the instruction, so every type of one text shares the head and its
    KV cache (shared-prefix extraction)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {prompt_format!r}; supported: {', '.join(PROMPT_FORMATS)}")
    head = INSTRUCTIONS[instruction % len(INSTRUCTIONS)].format(
        text_type=text_type, latent_entity_type=latent_entity_type
    )
    labelled = f"{text_type[:1].upper()}{text_type[1:]}: {text.strip()}"
    choices = "\n\nAnswer with one of: " + "; ".join(options) if options else ""
    if prompt_format == "text-first":  # split before the blank line: "\n\n" tokenises the same on both sides
        return labelled, f"\n\n{head}{choices}"
    return f"{head}\n\n{labelled}", choices


def user_message(
    text: str, text_type: str, latent_entity_type: str, instruction: int = 0, options: Sequence[str] | None = None,
    prompt_format: str = "instruction-first",
) -> str:
    """The user turn: one of the five instructions and the text (and the options, if any), in `prompt_format`."""
    return "".join(message_parts(text, text_type, latent_entity_type, instruction, options, prompt_format))


def adapter_prompt_format(adapter: Path | None) -> str:
    """The prompt format an adapter was trained with (its lentex.json); the base model and older adapters:
    instruction-first."""
    if adapter is None or not (adapter / FORMAT_FILE).is_file():
        return "instruction-first"
    import json

    return json.loads((adapter / FORMAT_FILE).read_text())["prompt_format"]


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

    prompt_format: str = "instruction-first"  # from the adapter folder's lentex.json
    int8: bool = False
    early_stop: bool = True  # drop finished rows while decoding (False: transformers' generate, as before)
    _opening: tuple | None = None  # the chat opening's tokens and KV cache, computed on first use

    def __init__(
        self,
        model: str = SMOLLM2,
        adapter: str | Path | None = "default",
        device: str = "cpu",
        max_new_tokens: int = 12,
        max_input_tokens: int = 384,
        max_values: int = 3,
        batch_size: int = 16,
        int8: bool = False,
        prompt_format: str | None = None,
        early_stop: bool = True,
    ):
        self.model_name = model
        self.adapter = _resolve_adapter(adapter)
        self.prompt_format = prompt_format or adapter_prompt_format(self.adapter)
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt format {self.prompt_format!r}; supported: {', '.join(PROMPT_FORMATS)}")
        self.int8 = int8
        self.early_stop = early_stop
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_values = max_values
        self.batch_size = batch_size
        self.lm = self._load()
        if int8:
            self.lm = self._quantized(self.lm)

    @staticmethod
    def _quantized(lm: LoadedLM) -> LoadedLM:
        """int8 dynamic quantisation of every Linear layer (CPU): weights int8, activations quantised per call.
        A copy: the float model in the registry stays as it is for its other users."""
        import copy

        import torch

        model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(lm.model), {torch.nn.Linear}, dtype=torch.qint8)
        return LoadedLM(name=f"{lm.name}:int8", model=model, tokenizer=lm.tokenizer, device=lm.device)

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
        _use_grouped_sdpa(model)
        return LoadedLM(name=f"{self.model_name}+{self.adapter.name}", model=model, tokenizer=tokenizer, device=self.device)

    @property
    def fingerprint(self) -> str:
        """Identifies outputs for the content cache: model, adapter version, decoding settings."""
        adapter = "base"
        if self.adapter is not None:
            weights = self.adapter / "adapter_model.safetensors"
            digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.exists() else "none"
            adapter = f"{self.adapter.name}:{digest}"  # retraining changes the weights, hence the cache key
        runtime = ":int8" if self.int8 else ""
        fmt = ":text-first" if self.prompt_format == "text-first" else ""
        return (f"lentex:{self.model_name}:{adapter}:{self.max_new_tokens}:{self.max_input_tokens}:"
                f"{self.max_values}{runtime}{fmt}")

    def _clip(self, text: str) -> str:
        ids = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_input_tokens:
            return text
        return self.lm.tokenizer.decode(ids[: self.max_input_tokens])

    def prompt(self, text: str, text_type: str, latent_entity_type: str, instruction: int = 0,
               options: Sequence[str] | None = None) -> str:
        return "".join(self.prompt_parts(text, text_type, latent_entity_type, instruction, options))

    def prompt_parts(self, text: str, text_type: str, latent_entity_type: str, instruction: int = 0,
                     options: Sequence[str] | None = None) -> tuple[str, str]:
        """The chat prompt split where the type-specific part starts: (shared prefix, per-type suffix)."""
        head, tail = message_parts(self._clip(text), text_type, latent_entity_type, instruction, options,
                                   self.prompt_format)
        full = self.lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": head + tail}], tokenize=False, add_generation_prompt=True
        )
        cut = full.index(head) + len(head)
        return full[:cut], full[cut:]

    def _is_torch(self) -> bool:
        """The LLM is a torch module (KV-cache surgery and the early-stop decoder need one)."""
        import torch

        return isinstance(self.lm.model, torch.nn.Module)

    def _ids(self, text: str) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def extract_types(
        self, texts: Sequence[str], text_type: str, types: Sequence[tuple[str, Sequence[str] | None]],
        instruction: int = 0,
    ) -> list[list[list[str]]]:
        """Every (type, options) for every text: out[type][text] = values. With a text-first adapter the text
        is run once per chunk and its KV cache reused for all types (shared-prefix extraction); otherwise
        one `extract` per type (also for runtimes other than torch, e.g. the ONNX graph)."""
        single = len(texts) == 1 and sum(1 for _, opts in types if not opts) <= 1  # a question: one prompt
        if self.prompt_format != "text-first" or not texts or not self._is_torch() or single:
            return [self.extract(texts, text_type, name, options=opts, instruction=instruction) for name, opts in types]
        out: list[list[list[str]]] = [[[] for _ in texts] for _ in types]
        free = [t for t, (_, opts) in enumerate(types) if not opts]
        per_group = max(1, self.batch_size // max(1, len(free)))  # rows per generate ~ batch_size
        order = by_length(texts)  # groups of similar length: little padding in the prefix pass
        for i in range(0, len(texts), per_group):
            members = order[i : i + per_group]
            if free:
                raws = self._generate_shared([texts[m] for m in members], text_type, [types[t][0] for t in free],
                                             instruction)
                for j, t in enumerate(free):
                    for k, m in enumerate(members):
                        out[t][m] = normalize_answer(raws[k][j], self.max_values)
        for t, (name, opts) in enumerate(types):
            if opts:
                out[t] = [[o] for o in self.choose(texts, text_type, name, opts, instruction)]
        return out

    def _generate_shared(self, texts: list[str], text_type: str, type_names: list[str],
                         instruction: int) -> list[list[str]]:
        """Greedy answers [text][type]: the prompts' common opening runs once for the batch, each text's prefix
        (the tokens all its types' prompts share; padded before it) once; then the types are decoded side by
        side in the text's row (`_decode_packed`), or with `early_stop=False` by transformers' `generate` on the
        prefix cache repeated per type (suffixes padded in the middle; positions from the attention mask)."""
        import torch

        tok = self.lm.tokenizer
        pad = tok.pad_token_id
        prefixes, suffixes = [], []
        for text in texts:
            # each type's whole prompt as tokens; the tokens they all start with (the text and the instruction's
            # opening words) are run once per text
            rows = [self._ids(self.prompt(text, text_type, name, instruction)) for name in type_names]
            shared = _common_length(rows)
            prefixes.append(rows[0][:shared])
            suffixes.append([row[shared:] for row in rows])
        n_types = len(type_names)
        # the chat template's opening (system turn, "Text type:") is the same for every text: run it once
        common = _common_length(prefixes)
        c_ids = torch.tensor([prefixes[0][:common]], dtype=torch.long)
        rests = [ids[common:] for ids in prefixes]
        p_len = max(len(r) for r in rests)
        p_ids = torch.full((len(texts), p_len), pad, dtype=torch.long)
        p_mask = torch.zeros((len(texts), p_len), dtype=torch.long)
        for r, ids in enumerate(rests):
            p_ids[r, p_len - len(ids):] = torch.tensor(ids)
            p_mask[r, p_len - len(ids):] = 1
        decoder = self.lm.model.get_decoder()  # the prefix passes need no vocabulary projection
        with torch.inference_mode():
            cache = None
            if common:
                cache = decoder(input_ids=c_ids.to(self.device), use_cache=True).past_key_values
                cache.batch_repeat_interleave(len(texts))
            c_rows = c_ids.expand(len(texts), -1)
            full_mask = torch.cat([torch.ones_like(c_rows), p_mask], 1)
            pos = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, common:]
            cache = decoder(input_ids=p_ids.to(self.device), attention_mask=full_mask.to(self.device),
                            position_ids=pos.to(self.device), past_key_values=cache, use_cache=True).past_key_values
            if self.early_stop:  # the types side by side in one row per text: the prefix cache is not copied
                return self._decode_packed(cache, full_mask, suffixes)
            # the early_stop=False reference: transformers' generate on the prefix cache repeated per type
            s_len = max(len(s) for row in suffixes for s in row)
            s_ids = torch.full((len(texts) * n_types, s_len), pad, dtype=torch.long)
            s_mask = torch.zeros((len(texts) * n_types, s_len), dtype=torch.long)
            for r, row in enumerate(suffixes):
                for t, ids in enumerate(row):
                    s_ids[r * n_types + t, s_len - len(ids):] = torch.tensor(ids)
                    s_mask[r * n_types + t, s_len - len(ids):] = 1
            cache.batch_repeat_interleave(n_types)
            ids = torch.cat([c_rows, p_ids], 1).repeat_interleave(n_types, 0)
            ids = torch.cat([ids, s_ids], 1).to(self.device)
            mask = torch.cat([full_mask.repeat_interleave(n_types, 0), s_mask], 1).to(self.device)
            out = self.lm.model.generate(
                input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=self.max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=tok.eos_token_id,
            )
        decoded = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        return [decoded[r * n_types:(r + 1) * n_types] for r in range(len(texts))]

    def _opening_cache(self, ids):
        """A copy of the KV cache of the chat template's opening (system turn, user tag: every prompt's first
        ~30 tokens) if `ids` starts with it, else None. Computed once per extractor: a lone question then runs
        only its own tokens."""
        import copy

        import torch

        if self._opening is None:
            a = self._ids(self.prompt("x", "a", "b"))
            b = self._ids(self.prompt("y", "c", "d"))
            k = next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), 0)
            with torch.inference_mode():
                cache = self.lm.model.get_decoder()(input_ids=torch.tensor([a[:k]], device=self.device),
                                                    use_cache=True).past_key_values if k else None
            self._opening = (a[:k], cache)
        opening, cache = self._opening
        if cache is None or len(ids) <= len(opening) or ids[: len(opening)].tolist() != opening:
            return None
        return copy.deepcopy(cache)

    def _decode_packed(self, cache, prefix_mask, suffixes: list[list[list[int]]]) -> list[list[str]]:
        """Greedy first-line answers [text][type] with every type of a text in the text's own row: the row holds
        the text's prefix once (`cache`, real columns `prefix_mask`), then each type's suffix as its own block,
        then one generated token per type per step. A 4-D mask lets each type see the prefix and its own tokens
        only, and positions continue from the prefix for each type, so every type reads exactly what it reads
        alone; but the prefix cache is neither repeated per type nor copied per type at each step. A type stops
        at its end token or first line end (its later tokens are masked out); a text leaves the batch when all
        its types have stopped."""
        import torch

        tok = self.lm.tokenizer
        decoder, head = self.lm.model.get_decoder(), self.lm.model.get_output_embeddings()
        newline, content = _token_classes(tok)
        dev, pad, eos = self.device, tok.pad_token_id, tok.eos_token_id
        n, types = len(suffixes), len(suffixes[0])
        width = max(len(s) for row in suffixes for s in row)
        real = prefix_mask.bool()  # [rows, columns]: the cache columns that hold real tokens
        owner = torch.full((real.shape[1],), -1, dtype=torch.long)  # a column's type; -1 = the shared prefix
        ids = torch.full((n, types * width), pad, dtype=torch.long)
        fresh = torch.zeros((n, types * width), dtype=torch.bool)
        for r, row in enumerate(suffixes):
            for t, toks in enumerate(row):  # block t, padded on the left so its last column is its last token
                ids[r, (t + 1) * width - len(toks):(t + 1) * width] = torch.tensor(toks)
                fresh[r, (t + 1) * width - len(toks):(t + 1) * width] = True
        start = prefix_mask.sum(1)  # each type's first position: right after its text
        pos = (start[:, None, None] + fresh.view(n, types, width).long().cumsum(-1) - 1).clamp(min=0)
        block = torch.arange(types).repeat_interleave(width)
        q = torch.arange(types * width)
        own = (block[:, None] == block[None, :]) & (q[:, None] >= q[None, :])  # own block, causal
        mask = torch.cat([real[:, None, :].expand(n, len(q), real.shape[1]),
                          (own[None] & fresh[:, None, :]) | torch.eye(len(q), dtype=torch.bool)[None]], -1)
        answers: list[list[list[int]]] = [[[] for _ in range(types)] for _ in range(n)]
        rows = torch.arange(n)
        with torch.inference_mode():
            out = decoder(input_ids=ids.to(dev), attention_mask=mask[:, None].to(dev),
                          position_ids=pos.view(n, -1).to(dev), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            real, owner = torch.cat([real, fresh], 1), torch.cat([owner, block])  # owner: only for `sees`
            hidden = out.last_hidden_state.view(n, types, width, -1)[:, :, -1]
            last = pos[:, :, -1]
            done = torch.zeros((n, types), dtype=torch.bool)
            seen = torch.zeros((n, types), dtype=torch.bool)
            sees = (owner[None, :] == torch.arange(types)[:, None]) | (owner[None, :] == -1)  # [types, columns]
            for step in range(self.max_new_tokens):
                nxt = head(hidden.reshape(-1, hidden.shape[-1]).contiguous()).argmax(-1).view(len(rows), types).cpu()
                stop = nxt == eos
                for i, r in enumerate(rows.tolist()):
                    for t in range(types):
                        if not done[i, t] and not stop[i, t]:
                            answers[r][t].append(int(nxt[i, t]))
                stop |= newline[nxt] & seen
                seen |= content[nxt]
                done |= stop
                keep = (~done.all(1)).nonzero().squeeze(1)
                if step == self.max_new_tokens - 1 or len(keep) == 0:
                    break
                if len(keep) < len(rows):
                    cache.batch_select_indices(keep.to(dev))
                    rows, real, done, seen, nxt, last = rows[keep], real[keep], done[keep], seen[keep], nxt[keep], last[keep]
                last = last + 1
                feed = torch.where(done, torch.full_like(nxt, pad), nxt)
                mask = torch.cat([real[:, None, :] & sees[None], torch.eye(types, dtype=torch.bool).expand(len(rows), -1, -1)], -1)
                out = decoder(input_ids=feed.to(dev), attention_mask=mask[:, None].to(dev), position_ids=last.to(dev),
                              past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                real = torch.cat([real, ~done], 1)
                sees = torch.cat([sees, torch.eye(types, dtype=torch.bool)], 1)
                hidden = out.last_hidden_state
        return [tok.batch_decode(row, skip_special_tokens=True) for row in answers]

    def generate(self, prompts: Sequence[str], first_line: bool = False) -> list[str]:
        """Greedy decoding of a batch of full prompts (left padding). `first_line`: only the answer's first
        non-empty line is wanted (what `normalize_answer` reads), so a row stops at its end."""
        import torch

        tok = self.lm.tokenizer
        outputs: list[str] = []
        tok.padding_side = "left"
        order = by_length(prompts)  # batches of similar length: little padding
        for i in range(0, len(prompts), self.batch_size):
            batch = [prompts[k] for k in order[i : i + self.batch_size]]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            if self.early_stop and self._is_torch():
                outputs.extend(self._greedy(enc["input_ids"], enc["attention_mask"], None, first_line))
                continue
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
        restored = [""] * len(prompts)
        for k, text in zip(order, outputs):
            restored[k] = text
        return restored

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
        return [normalize_answer(raw, self.max_values) for raw in self.generate(prompts, first_line=True)]

    def _greedy(self, ids, mask, cache, first_line: bool) -> list[str]:
        """Greedy decoding that drops a row from the batch as soon as it is finished: at its end token, or
        (`first_line`) at the end of its first non-empty line. `cache` (or None) holds the first
        `cache.get_seq_length()` tokens of `ids`. Same tokens as `generate(do_sample=False)` for every row up
        to where it stops; a batch no longer runs to the longest answer's length, and the vocabulary
        projection is computed for the last position only."""
        import torch

        tok = self.lm.tokenizer
        decoder, head = self.lm.model.get_decoder(), self.lm.model.get_output_embeddings()
        newline, content = _token_classes(tok)
        eos = tok.eos_token_id
        if cache is None and ids.shape[0] == 1:  # one prompt (a question): start from the cached chat opening
            cache = self._opening_cache(ids[0])
        past = cache.get_seq_length() if cache is not None else 0
        mask = mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        answers: list[list[int]] = [[] for _ in range(ids.shape[0])]
        rows = torch.arange(ids.shape[0])  # which answer each live row writes to
        seen = torch.zeros(ids.shape[0], dtype=torch.bool)  # the row's answer has a non-blank character
        step_ids, step_pos, last = ids[:, past:].to(self.device), pos[:, past:], pos[:, -1]
        with torch.inference_mode():
            for step in range(self.max_new_tokens):
                res = decoder(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                              past_key_values=cache, use_cache=True)
                cache = res.past_key_values
                # the vocabulary projection of the last position only, as one 2-D matmul (the model's own
                # head on a [rows, 1, hidden] slice runs a batched matmul over a copied weight: ~30x slower)
                nxt = head(res.last_hidden_state[:, -1].contiguous()).argmax(-1).cpu()
                done = nxt == eos
                for r, t, d in zip(rows.tolist(), nxt.tolist(), done.tolist()):
                    if not d:
                        answers[r].append(t)
                if first_line:
                    done |= newline[nxt] & seen
                    seen |= content[nxt]
                keep = (~done).nonzero().squeeze(1)
                if step == self.max_new_tokens - 1 or len(keep) == 0:
                    break
                if len(keep) < len(rows):
                    cache.batch_select_indices(keep.to(self.device))
                    rows, seen, nxt, last, mask = rows[keep], seen[keep], nxt[keep], last[keep], mask[keep]
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], 1)
                last = last + 1
                step_ids, step_pos = nxt[:, None].to(self.device), last[:, None]
        return tok.batch_decode(answers, skip_special_tokens=True)

    def choose(
        self, texts: Sequence[str], text_type: str, latent_entity_type: str, options: Sequence[str],
        instruction: int = 0,
    ) -> list[str]:
        """Constrained answers: the option with the highest mean token log-likelihood per text."""
        return [options[int(max(range(len(options)), key=scores.__getitem__))]
                for scores in (self.score_options(t, text_type, latent_entity_type, options, instruction)
                               for t in texts)]

    def option_probabilities(
        self, text: str, text_type: str, latent_entity_type: str, options: Sequence[str], instruction: int = 0,
    ) -> list[float]:
        """A confidence per option: softmax over the options' mean token log-likelihoods (sums to 1)."""
        import math

        scores = self.score_options(text, text_type, latent_entity_type, options, instruction)
        top = max(scores)
        exp = [math.exp(s - top) for s in scores]
        total = sum(exp)
        return [e / total for e in exp]

    def score_options(
        self, text: str, text_type: str, latent_entity_type: str, options: Sequence[str], instruction: int = 0,
    ) -> list[float]:
        """Mean token log-likelihood of each option (and its end token) as the answer for `text`. The whole
        prompt (which lists the options, as trained) runs once; its KV cache and last logits serve every
        option row, so a row costs only its own few tokens."""
        import torch

        if not options:
            return []
        tok = self.lm.tokenizer
        p_ids = torch.tensor([self._ids(self.prompt(text, text_type, latent_entity_type, instruction, options))],
                             device=self.device)
        tok.padding_side = "right"
        enc = tok([opt + (tok.eos_token or "") for opt in options], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(self.device)
        n, p_len = len(options), p_ids.shape[1]
        with torch.inference_mode():
            if self._is_torch():  # from the cached chat opening; logits of the last position only
                opening = self._opening_cache(p_ids[0])
                done = opening.get_seq_length() if opening is not None else 0
                head = self.lm.model(input_ids=p_ids[:, done:], past_key_values=opening, use_cache=True,
                                     logits_to_keep=1)
            else:  # the ONNX graph: the whole prompt, every position's logits
                head = self.lm.model(input_ids=p_ids, use_cache=True)
            cache = head.past_key_values
            cache.batch_repeat_interleave(n)
            mask = torch.cat([torch.ones((n, p_len), dtype=enc["attention_mask"].dtype, device=self.device),
                              enc["attention_mask"]], 1)
            pos = (p_len + torch.arange(enc["input_ids"].shape[1], device=self.device)).expand(n, -1)
            rows = self.lm.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos,
                                 past_key_values=cache).logits
            # token j of a row is predicted by the prompt's last position (j = 0) or the row's position j - 1
            logits = torch.cat([head.logits[:, -1:].expand(n, -1, -1), rows[:, :-1]], 1).float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, enc["input_ids"].unsqueeze(-1)).squeeze(-1)
        keep = enc["attention_mask"]
        return ((logp * keep).sum(1) / keep.sum(1).clamp(min=1)).tolist()


GROUPED_SDPA = "latentsearch_grouped_sdpa"


def _grouped_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs):
    """SDPA for grouped-query attention without copying the KV cache per query head: the query heads that share
    a key/value head are stacked along the sequence axis ([b, kv, group * L, d]) and the mask rows repeated
    to match. transformers' `sdpa` copies K and V `group` times instead (SmolLM2: 9 query heads on 3 KV heads),
    which with a cache repeated per latent type was half of the shared-prefix time. Same arithmetic per score."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, length, dim = query.shape
    kv = key.shape[1]
    if attention_mask is None or heads == kv:  # no mask (causal, unpadded): transformers' GQA kernel path
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal,
                                      **kwargs)
    group = heads // kv
    mask = attention_mask[:, :, :, : key.shape[-2]]
    mask = mask.expand(b, 1, length, mask.shape[-1]).repeat(1, 1, group, 1)
    out = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(b, kv, group * length, dim), key, value, attn_mask=mask, dropout_p=0.0, scale=scaling)
    return out.reshape(b, heads, length, dim).transpose(1, 2).contiguous(), None


def _use_grouped_sdpa(model) -> None:
    """Register the grouped SDPA once and switch `model` (one the extractor owns) to it."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.config._attn_implementation = GROUPED_SDPA


def by_length(texts: Sequence[str]) -> list[int]:
    """Indices of `texts`, longest first (characters stand in for tokens): batches of similar length pad little."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


_TOKEN_CLASSES: dict[int, tuple] = {}


def _token_classes(tok) -> tuple:
    """Two bool tensors over the vocabulary, computed once per tokenizer: the token's text holds a line
    break; the token's text holds a non-blank character (special tokens: neither)."""
    key = id(tok)
    if key not in _TOKEN_CLASSES:
        import torch

        texts = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=True)
        _TOKEN_CLASSES[key] = (torch.tensor(["\n" in t for t in texts]),
                               torch.tensor([bool(t.strip()) for t in texts]))
    return _TOKEN_CLASSES[key]


def _common_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for r in rows[1:]:
        k = 0
        while k < n and r[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


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
