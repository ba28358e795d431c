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

import functools
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
    bf16: bool = False
    early_stop: bool = True  # drop finished rows while decoding (False: transformers' generate, as before)
    _opening: tuple | None = None  # the chat opening's tokens and KV cache, computed on first use
    _hint_ids: dict[str, list[int]] | None = None  # likely answers' tokens (+ end token), kept across questions
    draft_nodes: int = 16  # tokens of a lone question's draft-answer tree per pass (`_greedy_hinted`; 8-32 best)

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
        bf16: bool = False,
    ):
        self.model_name = model
        self.adapter = _resolve_adapter(adapter)
        self.prompt_format = prompt_format or adapter_prompt_format(self.adapter)
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"unknown prompt format {self.prompt_format!r}; supported: {', '.join(PROMPT_FORMATS)}")
        if int8 and bf16:
            raise ValueError("choose one of int8 and bf16 for the extractor's Linear layers, not both")
        self.int8, self.bf16 = int8, bf16
        self.early_stop = early_stop
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_values = max_values
        self.batch_size = batch_size
        self.lm = self._load()
        if int8:
            self.lm = self._quantized(self.lm)
        if bf16:
            self.lm = self._bf16_packed(self.lm)

    @staticmethod
    def _quantized(lm: LoadedLM) -> LoadedLM:
        """int8 dynamic quantisation of every Linear layer (CPU): weights int8, activations quantised per call.
        A copy: the float model in the registry stays as it is for its other users."""
        import copy

        import torch

        model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(lm.model), {torch.nn.Linear}, dtype=torch.qint8)
        return LoadedLM(name=f"{lm.name}:int8", model=model, tokenizer=lm.tokenizer, device=lm.device)

    def _bf16_packed(self, lm: LoadedLM) -> LoadedLM:
        """Linear layers in bfloat16 with oneDNN-packed weights (CPU with AMX/AVX512-BF16): a question's
        extraction ~1.7x faster, values agree ~90 % with float32 (benchmarks/query.py). The adapter-merged model
        is this extractor's own copy; the registry's base model is copied first."""
        import copy

        from latentsearch.models.bf16_linear import pack_linears_bf16

        model = lm.model if self.adapter is not None else copy.deepcopy(lm.model)
        pack_linears_bf16(model)
        return LoadedLM(name=f"{lm.name}:bf16", model=model, tokenizer=lm.tokenizer, device=lm.device)

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
            adapter = f"{self.adapter.name}:{_weights_digest(self.adapter)}"  # retraining changes the key
        runtime = ":int8" if self.int8 else ":bf16" if self.bf16 else ""
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
            sees = torch.cat([torch.ones((types, real.shape[1]), dtype=torch.bool),  # [types, columns]: the prefix
                              block[None, :] == torch.arange(types)[:, None]], 1)  # and the type's own block
            real = torch.cat([real, fresh], 1)
            hidden = out.last_hidden_state.view(n, types, width, -1)[:, :, -1]
            last = pos[:, :, -1]
            done = torch.zeros((n, types), dtype=torch.bool)
            seen = torch.zeros((n, types), dtype=torch.bool)
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

    def generate(self, prompts: Sequence[str], first_line: bool = False, hints: Sequence[str] = ()) -> list[str]:
        """Greedy decoding of a batch of full prompts (left padding). `first_line`: only the answer's first
        non-empty line is wanted (what `normalize_answer` reads), so a row stops at its end. `hints`: likely
        answers, most likely first, for a lone prompt (`_greedy_hinted`): fewer passes, the same answer."""
        import torch

        tok = self.lm.tokenizer
        if hints and len(prompts) == 1 and self.early_stop and self._is_torch():
            ids = torch.tensor([self._ids(prompts[0])], device=self.device)
            return [self._greedy_hinted(ids, hints, first_line)]
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
        hints: Sequence[str] = (),
    ) -> list[list[str]]:
        """One list of values per text (empty when the model gives nothing usable). `hints`: likely answers for a
        single text, most likely first (a question: the index's values nearest to it); they make decoding cheaper
        and never change the answer."""
        if not texts:
            return []
        if options:
            return [[o] for o in self.choose(texts, text_type, latent_entity_type, options, instruction)]
        prompts = [self.prompt(t, text_type, latent_entity_type, instruction) for t in texts]
        return [normalize_answer(raw, self.max_values) for raw in self.generate(prompts, first_line=True, hints=hints)]

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

    def _greedy_hinted(self, ids, hints: Sequence[str], first_line: bool) -> str:
        """Greedy decoding of one prompt with draft answers (speculative decoding, the drafts from `hints`). Each
        pass feeds the tokens decided so far plus a token tree of the hints that continue the answer (merged on
        common prefixes, at most `draft_nodes` nodes, each node seeing the prompt and its ancestors only); the
        model's own choice is then followed down the tree as far as the tree has it, those nodes stay in the
        cache and the rest are dropped. The answer is greedy decoding's; a short answer found among the hints
        costs one pass instead of a prefill and a step per token."""
        import torch

        tok = self.lm.tokenizer
        head = self.lm.model.get_output_embeddings()
        newline, content = _token_classes(tok)
        eos = tok.eos_token_id
        drafts = self._hint_tokens(hints)
        cache = self._opening_cache(ids[0])
        past = cache.get_seq_length() if cache is not None else 0
        feed, answer, seen = ids[0, past:].tolist(), [], False
        with torch.inference_mode():
            while True:
                tails = [d[len(answer):] for d in drafts if len(d) > len(answer) and d[:len(answer)] == answer]
                tree = TokenTree(tails, self.draft_nodes)
                hidden, cache = self._tree_pass(feed, tree, cache, past)
                logits = head(hidden[len(feed) - 1:].contiguous())  # the last fed token, then every node
                node, path = -1, []
                while True:  # follow the model's choice down the tree
                    t = int(logits[node + 1].argmax())
                    if t == eos:
                        return tok.decode(answer, skip_special_tokens=True)
                    answer.append(t)
                    if len(answer) >= self.max_new_tokens or (first_line and newline[t] and seen):
                        return tok.decode(answer, skip_special_tokens=True)
                    seen |= bool(content[t])
                    child = tree.children[node].get(t)
                    if child is None:
                        break
                    node = child
                    path.append(child)
                keep = list(range(past + len(feed))) + [past + len(feed) + n for n in path]
                _keep_positions(cache, keep)
                past, feed = len(keep), [answer[-1]]

    def _tree_pass(self, feed: list[int], tree: TokenTree, cache, past: int):
        """One decoder pass over `feed` (causal, after `past` cached tokens) then `tree`'s nodes (each sees the
        cache, `feed` and its own ancestors; its position is its depth after `feed`). Returns the hidden states
        [len(feed) + nodes, hidden] and the cache (holding every fed token and node)."""
        import torch

        n, f = len(tree.tokens), len(feed)
        ids = torch.tensor([feed + tree.tokens], device=self.device)
        pos = torch.tensor([list(range(past, past + f)) + [past + f + d for d in tree.depths]], device=self.device)
        mask = torch.zeros((f + n, past + f + n), dtype=torch.bool)
        mask[:, :past] = True
        mask[:f, past:past + f] = torch.ones((f, f), dtype=torch.bool).tril()
        mask[f:, past:past + f] = True
        if n:
            mask[f:, past + f:] = tree.ancestry()
        decoder = self.lm.model.get_decoder()
        out = decoder(input_ids=ids, position_ids=pos, attention_mask=mask[None, None].to(self.device),
                      past_key_values=cache, use_cache=True)
        return out.last_hidden_state[0], out.past_key_values

    def _hint_tokens(self, hints: Sequence[str]) -> list[list[int]]:
        """Each hint's answer tokens and the end token (tokenised once per extractor)."""
        if self._hint_ids is None or len(self._hint_ids) > 100_000:
            self._hint_ids = {}
        known = self._hint_ids
        for h in hints:
            if h not in known:
                known[h] = [*self._ids(h), self.lm.tokenizer.eos_token_id]
        return [known[h] for h in hints]

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
        """Mean token log-likelihood of each option (and its end token) as the answer for `text`. The prompt (which
        lists the options, as trained) and every option run in one pass: the options as a token tree after the
        prompt (shared first tokens computed once, each seeing the prompt and its own earlier tokens), from the
        cached chat opening. Runtimes other than torch: the prompt once, then the options as a batch on its cache."""
        import torch

        if not options:
            return []
        tok = self.lm.tokenizer
        prompt = self._ids(self.prompt(text, text_type, latent_entity_type, instruction, options))
        answers = [self._ids(opt + (tok.eos_token or "")) for opt in options]
        if not self._is_torch():
            return self._score_options_batched(prompt, answers)
        opening = self._opening_cache(torch.tensor(prompt))
        past = opening.get_seq_length() if opening is not None else 0
        tree = TokenTree(answers, budget=sum(len(a) for a in answers))
        with torch.inference_mode():
            hidden, _ = self._tree_pass(prompt[past:], tree, opening, past)
            # row 0 predicts an option's first token (the prompt's last position); row 1 + i the token after node i
            logits = self.lm.model.get_output_embeddings()(hidden[len(prompt) - past - 1:].contiguous())
            logp = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for answer, path in zip(answers, tree.paths):
            rows = [0, *(1 + node for node in path[:-1])]
            scores.append(float(logp[rows, answer].mean()))
        return scores

    def _score_options_batched(self, prompt: list[int], answers: list[list[int]]) -> list[float]:
        """`score_options` for graphs without custom attention masks (the ONNX export): the whole prompt once
        (every position's logits), its cache repeated per option, the options as one right-padded batch."""
        import torch

        pad = self.lm.tokenizer.pad_token_id
        n, p_len, width = len(answers), len(prompt), max(len(a) for a in answers)
        ids = torch.tensor([a + [pad] * (width - len(a)) for a in answers], device=self.device)
        keep = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in answers], device=self.device)
        with torch.inference_mode():
            head = self.lm.model(input_ids=torch.tensor([prompt], device=self.device), use_cache=True)
            cache = head.past_key_values
            cache.batch_repeat_interleave(n)
            mask = torch.cat([torch.ones((n, p_len), dtype=keep.dtype, device=self.device), keep], 1)
            pos = (p_len + torch.arange(width, device=self.device)).expand(n, -1)
            rows = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache).logits
            # token j of a row is predicted by the prompt's last position (j = 0) or the row's position j - 1
            logits = torch.cat([head.logits[:, -1:].expand(n, -1, -1), rows[:, :-1]], 1).float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
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


class TokenTree:
    """Token sequences merged on their common prefixes, in insertion order, at most `budget` nodes (a sequence
    that does not fit is cut). `children[node]` maps a token to its child node (`children[-1]`: the roots);
    `paths[i]` is sequence i's nodes (shorter than the sequence where the budget cut it)."""

    def __init__(self, sequences: Sequence[Sequence[int]], budget: int):
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.depths: list[int] = []
        self.children: dict[int, dict[int, int]] = {-1: {}}
        self.paths: list[list[int]] = []
        for seq in sequences:
            node, path = -1, []
            for depth, t in enumerate(seq):
                child = self.children[node].get(t)
                if child is None:
                    if len(self.tokens) >= budget:
                        break
                    child = len(self.tokens)
                    self.tokens.append(int(t))
                    self.parents.append(node)
                    self.depths.append(depth)
                    self.children[node][t] = child
                    self.children[child] = {}
                path.append(child)
                node = child
            self.paths.append(path)

    def ancestry(self):
        """[nodes, nodes] bool: node i sees node j (j is i or one of its ancestors)."""
        import torch

        n = len(self.tokens)
        sees = torch.eye(n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):  # parents come before their children
            if parent >= 0:
                sees[i] |= sees[parent]
        return sees


def _keep_positions(cache, keep: Sequence[int]) -> None:
    """Keep only the cached positions `keep` (in order) in every layer of a transformers DynamicCache."""
    import torch

    index = torch.tensor(keep, device=cache.layers[0].keys.device)
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(-2, index)
        layer.values = layer.values.index_select(-2, index)


def _weights_digest(adapter: Path) -> str:
    """A short hash of the adapter's weights file, read once per (file, mtime, size): the fingerprint is asked for
    on every question (hashing the file each time cost ~12 ms)."""
    weights = adapter / "adapter_model.safetensors"
    if not weights.exists():
        return "none"
    st = weights.stat()
    return _digest_of(str(weights.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


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
