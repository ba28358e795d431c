"""OpenAI-compatible routes: `/v1/embeddings`, `/v1/chat/completions`, `/v1/models`.

Shapes follow OpenAI's API so the `openai` client, LangChain's `OpenAIEmbeddings`/`ChatOpenAI` and
OpenSearch ML Commons' standard connector blueprints work unchanged with `base_url` pointed here.
Embeddings honour `encoding_format: base64` (the `openai` client's default). Chat runs the local
LLM through its chat template. `stream: true` is answered as server-sent events, one
`chat.completion.chunk` per piece of text as it is generated, then `data: [DONE]`; a streamed request
bypasses the micro-batcher (its tokens cannot wait for a batch to end) and holds the model's worker
thread while it generates, like a batch of its own. `model` must name a model of `/v1/models` that
serves the route (404 `model_not_found` with the list otherwise, as OpenAI answers).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from latentsearch.onnx_export.serve.errors import AUTH_ERRORS, BODY_ERRORS, MODEL_ERRORS, UNKNOWN_MODEL, ApiError
from latentsearch.onnx_export.serve.guards import check_prompt, generation_budget
from latentsearch.onnx_export.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)
from latentsearch.onnx_export.serve.security import require_api_key
from latentsearch.onnx_export.serve.services import Services, get_services

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Depends(require_api_key)],
                   responses={**AUTH_ERRORS, **BODY_ERRORS, **MODEL_ERRORS, **UNKNOWN_MODEL})

DEFAULT_MAX_TOKENS = 128


def _same_model(requested: str, served: str) -> bool:
    """Equal, or equal after the last `/`: a Hugging Face id (sentence-transformers/all-MiniLM-L6-v2) or the
    folder name of a model served from a path."""
    return requested == served or requested.rstrip("/").rsplit("/", 1)[-1] == served.rstrip("/").rsplit("/", 1)[-1]


def served_model(services: Services, requested: str | None, route: str) -> str:
    """The served model a request's `model` names for `route` (embeddings | chat); 404 model_not_found, listing
    the route's models and all of /v1/models, for any other name. Omitted: the route's default model."""
    names = [services.embedder_name] if route == "embeddings" else _chat_models(services)
    if requested is None:
        return names[0]
    for name in names:
        if _same_model(requested, name):
            return name
    every = ", ".join(m["id"] for m in _model_list(services))
    raise ApiError(404, f"The model `{requested}` does not exist on this server for {route}: use "
                        f"{' or '.join(f'`{n}`' for n in names)} (served models: {every}; GET /v1/models)",
                   "model_not_found", param="model", type="invalid_request_error")


def _chat_models(services: Services) -> list[str]:
    return [services.llm_name, *([services.extractor_name] if services.extractor_name != services.llm_name else [])]


def _texts(request: EmbeddingRequest, limit: int) -> list[str]:
    texts = request.texts()
    if len(texts) > limit:
        raise ApiError(413, f"{len(texts)} inputs in one request; this server takes at most {limit} "
                            "(--max-inputs): split the list", "too_many_inputs")
    return texts


@router.post("/embeddings", response_model=EmbeddingResponse, summary="Embed texts (OpenAI-compatible)")
async def embeddings(body: EmbeddingRequest, services: Services = Depends(get_services)) -> EmbeddingResponse:
    """L2-normalised sentence embeddings of the configured embedder (default all-MiniLM-L6-v2, 384-d).
    Concurrent requests are merged into one model call (micro-batching)."""
    served_model(services, body.model, "embeddings")
    texts = _texts(body, services.config.max_inputs)
    results = await services.embed(texts)
    dim = int(results[0].vector.shape[0])
    if body.dimensions is not None and body.dimensions != dim:
        raise ApiError(422, f"`dimensions` = {body.dimensions}, but {services.embedder_name} makes {dim}-d "
                            "vectors and cannot shorten them: omit `dimensions` or send "
                            f"{dim}", "unsupported_dimensions")
    data = []
    for i, r in enumerate(results):
        vector: list[float] | str
        if body.encoding_format == "base64":
            vector = base64.b64encode(np.asarray(r.vector, dtype="<f4").tobytes()).decode("ascii")
        else:
            vector = r.vector.tolist()
        data.append(EmbeddingData(index=i, embedding=vector))
    tokens = sum(r.tokens for r in results)
    return EmbeddingResponse(data=data, model=services.embedder_name,
                             usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


_ROLES = {"developer": "system", "tool": "user"}


@router.post("/chat/completions", response_model=ChatCompletionResponse,
             summary="Chat with the local LLM (OpenAI-compatible)",
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or server-sent events when `stream` is true"}})
async def chat_completions(body: ChatCompletionRequest, services: Services = Depends(get_services)):
    """Completion of a conversation by the configured chat LLM (default SmolLM2-135M-Instruct).
    `model` = the extractor's name (`/v1/models`, e.g. SmolLM2-135M-Instruct+lentex-smollm2-lora-textfirst) answers with the
    LLM + LoRA adapter the extractor uses (remote extraction, `models.extractor_url`), the chat LLM's name (or
    none) with the chat LLM, any other name gets 404 `model_not_found`. `temperature: 0` is greedy and
    deterministic; `max_tokens` bounds the answer (finish_reason `length` when reached); `stop` strings cut it.
    `stream: true` sends the tokens as they are generated (server-sent events; not micro-batched)."""
    unsupported = body.unsupported()
    if unsupported:
        raise ApiError(400, unsupported, "unsupported_parameter")
    model = served_model(services, body.model, "chat")
    budget = generation_budget(services, body.max_completion_tokens or body.max_tokens, DEFAULT_MAX_TOKENS)
    messages = [{"role": _ROLES.get(m.role, m.role), "content": m.text()} for m in body.messages]
    check_prompt(services, [m["content"] for m in messages], "the messages")
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        return await _stream(services, body, model, messages, budget,
                             {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                              "model": model})
    outputs = await services.generate_with(model, messages, max_tokens=budget, temperature=body.temperature,
                                           top_p=body.top_p, stops=body.stops(), n=body.n)
    prompt_tokens = outputs[0].prompt_tokens
    completion_tokens = sum(o.completion_tokens for o in outputs)
    return ChatCompletionResponse(
        id=completion_id, created=created, model=model,
        choices=[ChatChoice(index=i, message=AssistantMessage(content=o.text), finish_reason=o.finish_reason)  # type: ignore[arg-type]
                 for i, o in enumerate(outputs)],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens),
    )


_END = object()  # the generation finished (or failed): no more text


async def _stream(services: Services, body: ChatCompletionRequest, model: str, messages: list[dict[str, str]],
                  budget: int, base: dict) -> StreamingResponse:
    """Tokens as OpenAI `chat.completion.chunk` events while the model generates them: role, one chunk per
    new piece of text, the finish reason (+ usage with `stream_options.include_usage`), `[DONE]`.
    Failures before the first piece of text (model missing, ...) are ordinary JSON errors."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[object] = asyncio.Queue()
    gone = threading.Event()  # the client disconnected: generation stops at its next token
    task = asyncio.ensure_future(services.stream_with(
        model, messages, lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text), gone.is_set,
        max_tokens=budget, temperature=body.temperature, top_p=body.top_p, stops=body.stops()))
    # the worker's emits are queued on the loop before its result, so _END always comes after the last piece
    task.add_done_callback(lambda _: pieces.put_nowait(_END))
    try:
        first = await pieces.get()
    except asyncio.CancelledError:  # the client left before the first token
        gone.set()
        raise
    if first is _END:
        task.result()  # raises the generation's error as a normal error response

    def event(delta: dict, finish: str | None = None, **extra: object) -> str:
        return f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}], **extra})}\n\n"

    async def events() -> AsyncIterator[str]:
        try:
            yield event({"role": "assistant", "content": ""})
            piece = first
            while piece is not _END:
                yield event({"content": piece})
                piece = await pieces.get()
            out = task.result()
            yield event({}, out.finish_reason)
            if (body.stream_options or {}).get("include_usage"):
                usage = Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                              total_tokens=out.prompt_tokens + out.completion_tokens)
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage.model_dump()})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            gone.set()

    return StreamingResponse(events(), media_type="text/event-stream")


@router.get("/models", summary="The models this server answers with (OpenAI-compatible)")
async def models(services: Services = Depends(get_services)) -> dict:
    return {"object": "list", "data": _model_list(services)}


def _model_list(services: Services) -> list[dict]:
    return [{"id": name, "object": "model", "created": 0, "owned_by": "latentsearch"}
            for name in (services.embedder_name, *_chat_models(services))]
