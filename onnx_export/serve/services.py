"""What the routes call: one micro-batcher per model, the search backend, and model loading.

Models come from the process-wide registry (models/registry.py), so each loads once per process;
each loads on its own worker thread the first time it is needed (or at start, with `preload`).
Routers reach this object as `request.app.state.services` (see `get_services`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Request

from latentsearch.models.embedder import Embedder
from latentsearch.models.factory import get_embedder
from latentsearch.models.llm import LoadedLM, load_llm
from latentsearch.onnx_export.serve import inference
from latentsearch.onnx_export.serve.batching import MicroBatcher
from latentsearch.onnx_export.serve.metrics import Metrics
from latentsearch.onnx_export.serve.settings import ServeConfig

log = logging.getLogger("latentsearch.serve")


class Services:
    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config = config
        self.settings = config.settings
        self.metrics = metrics
        m = self.settings.models
        wait = config.batch_wait_ms
        self.embeddings = MicroBatcher[str, inference.Embedded](
            "embeddings", lambda texts: inference.embed_batch(self.embedder(), texts),
            max_batch=config.max_batch, max_wait_ms=wait, observer=metrics)
        self.chat = MicroBatcher[inference.ChatItem, inference.ChatOutput](
            "chat", lambda items: inference.generate_batch(self.llm(), items),
            max_batch=config.max_batch_llm, max_wait_ms=wait, observer=metrics)
        self.extractor_chat = MicroBatcher[inference.ChatItem, inference.ChatOutput](
            "extractor_chat", lambda items: inference.generate_batch(self.extractor_lm(), items),
            max_batch=config.max_batch_llm, max_wait_ms=wait, observer=metrics)
        self.extract = MicroBatcher[inference.ExtractItem, list[str]](
            "extract", lambda items: inference.extract_batch(self.extractor(), items),
            max_batch=config.max_batch_llm, max_wait_ms=wait, observer=metrics)
        self.mentions = MicroBatcher[str, Any](
            "mentions", lambda texts: self.mention_model().encode_texts(texts),
            max_batch=config.max_batch_llm, max_wait_ms=wait, observer=metrics)
        self.batchers = [self.embeddings, self.chat, self.extractor_chat, self.extract, self.mentions]
        self._backend: Any = None
        self._backend_lock = threading.Lock()
        self._embedded_lock = threading.Lock()
        self._retrievers: dict[str, tuple[Any, threading.Lock]] = {}
        self._device = m.device

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for b in self.batchers:
            await b.start()
        loaders = {"embeddings": (self.embeddings, self.embedder), "chat": (self.chat, self.llm),
                   "extract": (self.extract, self.extractor), "mentions": (self.mentions, self.mention_model)}
        for kind in self.config.preload:
            batcher, load = loaders[kind]
            log.info("loading model", extra={"model": kind})
            await batcher.run_in_worker(load)

    async def stop(self) -> None:
        await asyncio.gather(*(b.stop() for b in self.batchers))

    # ----- models (registry-cached: once per process) ---------------------------------------

    def embedder(self) -> Embedder:
        return get_embedder(self.settings.models.embedder, self._device)

    def llm(self) -> LoadedLM:
        return load_llm(self.settings.models.llm, self._device)

    def extractor(self) -> Any:
        from latentsearch.models.factory import get_extractor

        m = self.settings.models
        return get_extractor(m.llm, m.extractor_adapter, self._device)

    def extractor_lm(self) -> LoadedLM:
        """The extractor's own LM (the LLM with the LoRA adapter merged), for chat requests naming
        `extractor_name`: remote extractors (models.extractor_url) get exactly the local extractions."""
        lm = getattr(self.extractor(), "lm", None)
        if lm is None:
            from latentsearch.onnx_export.serve.errors import ApiError

            raise ApiError(422, f"the extractor model {self.extractor_name} runs on onnxruntime here and cannot chat; "
                                f"ask for model {self.llm_name}", "model_cannot_chat")
        return lm

    def mention_model(self) -> Any:
        from latentsearch.onnx_export.serve.mentions import load_mention_model

        return load_mention_model(self.settings, self._device, self.config.mention_head)

    def loaded_embedder_dimension(self) -> int | None:
        """The embedder's dimension if it is already loaded (never loads it)."""
        from latentsearch.models.registry import loaded_models

        name, loaded = self.settings.models.embedder, loaded_models()
        keys = {(kind, name, self._device) for kind in ("embedder", "onnx-embedder")}  # torch or ONNX runtime
        return self.embedder().dimension if keys & set(loaded) else None

    @property
    def embedder_name(self) -> str:
        return self.settings.models.embedder

    @property
    def llm_name(self) -> str:
        return self.settings.models.llm

    @property
    def extractor_name(self) -> str:
        from latentsearch.models.factory import extractor_name

        return extractor_name(self.settings.models)

    def backend_call(self) -> Any:
        """Held around backend calls: the embedded engine (one local LanceDB) takes one at a time;
        cluster clients are thread-safe and pool their connections."""
        return self._embedded_lock if self.settings.backend.resolved_kind == "embedded" else contextlib.nullcontext()

    def backend(self) -> Any:
        with self._backend_lock:
            if self._backend is None:
                from latentsearch.backends import open_backend

                self._backend = open_backend(self.settings.backend)
            return self._backend

    # ----- helpers for routers ---------------------------------------------------------------

    async def generate_with(self, model: str | None, messages: list[dict[str, str]], **kw: Any) -> list[inference.ChatOutput]:
        """Chat with the model a request names: the extractor's name selects the adapter-merged extractor LM,
        anything else the configured chat LLM."""
        if model is not None and model == self.extractor_name and model != self.llm_name:
            return await self.generate(messages, batcher=self.extractor_chat, **kw)
        return await self.generate(messages, **kw)

    async def stream_with(self, model: str | None, messages: list[dict[str, str]], emit: Callable[[str], None],
                          cancelled: Callable[[], bool], *, max_tokens: int, temperature: float = 0.0,
                          top_p: float = 1.0, stops: tuple[str, ...] = ()) -> inference.ChatOutput:
        """One streamed answer (`emit` gets each new piece of text, on the model's thread). It bypasses the
        micro-batcher (tokens go out as they are made, not when a batch ends) but runs on the model's worker
        thread, serialised with its batches like one more batch."""
        extractor = model is not None and model == self.extractor_name and model != self.llm_name
        batcher, load = (self.extractor_chat, self.extractor_lm) if extractor else (self.chat, self.llm)
        turns = tuple((m["role"], m["content"]) for m in messages)
        item = inference.ChatItem(turns, max_tokens, temperature, top_p, stops)
        return await batcher.run_in_worker(lambda: inference.stream_generate(load(), item, emit, cancelled))

    async def embed(self, texts: Sequence[str]) -> list[inference.Embedded]:
        return await self.embeddings.submit(list(texts))

    def blocking_embedder(self, loop: asyncio.AbstractEventLoop) -> _BatchedEmbedder:
        """An `Embedder`-like object for synchronous code running in a thread (query.search):
        its `encode` goes through the embeddings batcher on `loop`."""
        return _BatchedEmbedder(self, loop)

    def blocking_extractor(self, loop: asyncio.AbstractEventLoop) -> _BatchedExtractor:
        return _BatchedExtractor(self, loop)

    def retriever(self, index: str, loop: asyncio.AbstractEventLoop) -> tuple[Any, threading.Lock]:
        """The index's Retriever (query/retrieval.py: the one search-or-rewriter decision), built once with the
        server's batched embedder and extractor, and the lock its calls hold (the rewriter's caches are not
        thread-safe)."""
        from latentsearch.query.retrieval import Retriever, question_store

        with self._backend_lock:
            found = self._retrievers.get(index)
        if found is None:
            retriever = Retriever(self.backend(), index, self.blocking_embedder(loop),
                                  load_extractor=lambda: self.blocking_extractor(loop),
                                  store=question_store(self.settings))
            with self._backend_lock:
                found = self._retrievers.setdefault(index, (retriever, threading.Lock()))
        return found

    async def generate(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float = 0.0,
                       top_p: float = 1.0, stops: tuple[str, ...] = (), n: int = 1,
                       batcher: MicroBatcher | None = None) -> list[inference.ChatOutput]:
        """Chat completions for one conversation (`n` samples), batched with other callers (e.g. /rag)."""
        turns = tuple((m["role"], m["content"]) for m in messages)
        item = inference.ChatItem(turns, max_tokens, temperature, top_p, stops)
        return await (batcher or self.chat).submit([item] * n)


class _BatchedExtractor:
    """`LatentEntityExtractor.extract` for synchronous callers (the query rewriter), via the extract batcher."""

    def __init__(self, services: Services, loop: asyncio.AbstractEventLoop):
        self._services = services
        self._loop = loop

    def extract(self, texts: Sequence[str], text_type: str, latent_entity_type: str,
                options: Sequence[str] | None = None, instruction: int = 0) -> list[list[str]]:
        items = [inference.ExtractItem(t, text_type, latent_entity_type, tuple(options) if options else None)
                 for t in texts]
        return asyncio.run_coroutine_threadsafe(self._services.extract.submit(items), self._loop).result()


class _BatchedEmbedder:
    def __init__(self, services: Services, loop: asyncio.AbstractEventLoop):
        self._services = services
        self._loop = loop
        self.name = services.embedder_name

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        import numpy as np

        future = asyncio.run_coroutine_threadsafe(self._services.embed(list(texts)), self._loop)
        return np.stack([e.vector for e in future.result()])

    def __getattr__(self, name: str) -> Any:  # dimension, tokenizer, max_tokens: from the real embedder
        return getattr(self._services.embedder(), name)


def get_services(request: Request) -> Services:
    """FastAPI dependency: `services: Services = Depends(get_services)` in any router."""
    return request.app.state.services
