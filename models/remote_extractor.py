"""Latent extraction on any OpenAI-compatible endpoint (`latentsearch serve`, vLLM with the LoRA adapter, a
hosted API): the same prompt (`user_message` through the endpoint's chat template) and the same
normalisation (`normalize_answer`) as the local extractor, so a corpus can be enriched by a GPU box
or a pool of servers while ingest stays on a small machine.

    extractor = RemoteExtractor("http://gpu-box:8000/v1", model="SmolLM2-135M-Instruct+lentex-smollm2-lora-textfirst")
    extractor.extract(["The striker curled it into the top corner..."], "sports commentary", "sport name")

Requests run on a bounded pool (`concurrency`), each retried with exponential backoff on connection
errors, 429 and 5xx; when the retries are spent `RemoteExtractionError` is raised, so ingest stops
before writing the batch and a re-run resumes from its checkpoint (nothing is lost). `options` types
send the constrained prompt ("Answer with one of: ...") and map the answer onto the closest option
(never free text); chat completions cannot score given continuations, so logprob scoring is not used.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from latentsearch.models.extractor import normalize_answer, user_message

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RemoteExtractionError(RuntimeError):
    """The endpoint kept failing (or refused the request): the batch was not extracted."""


@dataclass
class RemoteStats:
    requests: int = 0  # successful completions
    retries: int = 0


class RemoteExtractor:
    """`LatentEntityExtractor`'s interface (`extract`, `fingerprint`) over HTTP."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 4,
        max_new_tokens: int = 12,
        max_input_tokens: int = 384,
        max_values: int = 3,
        max_retries: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        timeout_s: float = 120.0,
        tokenizer: object | None = None,
        batch_size: int = 16,  # accepted for the local extractor's signature; the pool bounds concurrency
        prompt_format: str = "instruction-first",  # the served adapter's (its lentex.json)
    ):
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model_name = model
        self.prompt_format = prompt_format
        self.concurrency = max(1, concurrency)
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.max_values = max_values
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.tokenizer = tokenizer  # clips long texts exactly like the local extractor when given
        self.stats = RemoteStats()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers, timeout=timeout_s,
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )

    @property
    def fingerprint(self) -> str:
        """Cache key: the endpoint and model answer, with these decoding settings."""
        fmt = ":text-first" if self.prompt_format == "text-first" else ""
        return (f"lentex-remote:{self.endpoint}:{self.model_name}:{self.max_new_tokens}:"
                f"{self.max_input_tokens}:{self.max_values}{fmt}")

    def close(self) -> None:
        self._client.close()

    def _clip(self, text: str) -> str:
        if self.tokenizer is None:
            return text[: self.max_input_tokens * 8]  # no tokenizer: a generous character bound
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if len(ids) <= self.max_input_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_input_tokens])  # type: ignore[attr-defined]

    def complete(self, message: str) -> str:
        """One greedy chat completion of a user message, with retries and backoff."""
        body = {"model": self.model_name, "messages": [{"role": "user", "content": message}],
                "max_tokens": self.max_new_tokens, "temperature": 0, "n": 1}
        delay = self.backoff_initial_s
        for attempt in range(self.max_retries + 1):
            try:
                r = self._client.post(self.endpoint, json=body)
                if r.status_code == 200:
                    self.stats.requests += 1
                    return r.json()["choices"][0]["message"]["content"] or ""
                if r.status_code not in RETRY_STATUS:
                    raise RemoteExtractionError(
                        f"{self.endpoint} answered {r.status_code}: {r.text[:300]}; check models.extractor_url, "
                        "models.extractor_model and models.extractor_api_key")
                problem = f"HTTP {r.status_code}"
            except httpx.TransportError as err:  # refused, reset, timed out: the endpoint may come back
                problem = f"{type(err).__name__}: {err}"
            if attempt == self.max_retries:
                raise RemoteExtractionError(
                    f"extraction endpoint {self.endpoint} failed {self.max_retries + 1} times ({problem}); "
                    "nothing of this batch was written: re-run ingest to resume from its checkpoint")
            self.stats.retries += 1
            log.warning("extraction endpoint %s: %s; retry %d in %.1fs", self.endpoint, problem, attempt + 1, delay)
            time.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)
        raise AssertionError("unreachable")

    def extract(
        self,
        texts: Sequence[str],
        text_type: str,
        latent_entity_type: str,
        options: Sequence[str] | None = None,
        instruction: int = 0,
        hints: Sequence[str] = (),
    ) -> list[list[str]]:
        """One list of values per text, in order; requests run `concurrency` at a time. `hints` (likely answers,
        which only make local decoding cheaper and never change an answer) are not sent: the endpoint decodes."""
        if not texts:
            return []
        messages = [user_message(self._clip(t), text_type, latent_entity_type, instruction, options or None,
                                 self.prompt_format) for t in texts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(messages))) as pool:
            raws = list(pool.map(self.complete, messages))
        if options:
            return [[closest_option(raw, options)] for raw in raws]
        return [normalize_answer(raw, self.max_values) for raw in raws]


def closest_option(raw: str, options: Sequence[str]) -> str:
    """The option the answer names: exact (normalised) match, else one contained in it, else the most similar."""
    answer = (normalize_answer(raw, 1) or [raw.strip().lower()])[0]
    lowered = {o.lower(): o for o in options}
    if answer in lowered:
        return lowered[answer]
    contained = [o for o in options if o.lower() in raw.lower()]
    if contained:
        return max(contained, key=len)
    return max(options, key=lambda o: difflib.SequenceMatcher(None, answer, o.lower()).ratio())
