"""OpenAI-compatible routes: `/v1/embeddings`, `/v1/chat/completions`, `/v1/models`.

Shapes follow OpenAI's API so the `openai` client, LangChain's `OpenAIEmbeddings`/`ChatOpenAI` and
OpenSearch ML Commons' standard connector blueprints work unchanged with `base_url` pointed here.
Embeddings honour `encoding_format: base64` (the `openai` client's default). Chat runs the local
LLM through its chat template; `stream: true` is answered as server-sent events (the whole answer
in one delta chunk: generation itself is batched, not token-streamed).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from latentsearch.onnx_export.serve.errors import AUTH_ERRORS, BODY_ERRORS, MODEL_ERRORS, ApiError
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
                   responses={**AUTH_ERRORS, **BODY_ERRORS, **MODEL_ERRORS})

DEFAULT_MAX_TOKENS = 128


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
    `model` = the extractor's name (`/v1/models`, e.g. SmolLM2-135M-Instruct+lentex-smollm2-lora) answers with the
    LLM + LoRA adapter the extractor uses (remote extraction, `models.extractor_url`), anything else with the
    chat LLM. `temperature: 0` is greedy and deterministic; `max_tokens` bounds the answer (finish_reason
    `length` when reached); `stop` strings cut it."""
    unsupported = body.unsupported()
    if unsupported:
        raise ApiError(400, unsupported, "unsupported_parameter")
    budget = generation_budget(services, body.max_completion_tokens or body.max_tokens, DEFAULT_MAX_TOKENS)
    messages = [{"role": _ROLES.get(m.role, m.role), "content": m.text()} for m in body.messages]
    check_prompt(services, [m["content"] for m in messages], "the messages")
    outputs = await services.generate_with(body.model, messages, max_tokens=budget, temperature=body.temperature,
                                      top_p=body.top_p, stops=body.stops(), n=body.n)
    created = int(time.time())
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    prompt_tokens = outputs[0].prompt_tokens
    completion_tokens = sum(o.completion_tokens for o in outputs)
    response = ChatCompletionResponse(
        id=completion_id, created=created,
        model=services.extractor_name if body.model == services.extractor_name else services.llm_name,
        choices=[ChatChoice(index=i, message=AssistantMessage(content=o.text), finish_reason=o.finish_reason)  # type: ignore[arg-type]
                 for i, o in enumerate(outputs)],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens),
    )
    if not body.stream:
        return response
    return StreamingResponse(_sse(response), media_type="text/event-stream")


async def _sse(response: ChatCompletionResponse) -> AsyncIterator[str]:
    """The finished answer as OpenAI `chat.completion.chunk` events: role+content, finish, [DONE]."""
    base = {"id": response.id, "object": "chat.completion.chunk", "created": response.created,
            "model": response.model}
    for choice in response.choices:
        delta = {"role": "assistant", "content": choice.message.content}
        yield f"data: {json.dumps({**base, 'choices': [{'index': choice.index, 'delta': delta, 'finish_reason': None}]})}\n\n"
        end = {"index": choice.index, "delta": {}, "finish_reason": choice.finish_reason}
        yield f"data: {json.dumps({**base, 'choices': [end]})}\n\n"
    yield "data: [DONE]\n\n"


@router.get("/models", summary="The models this server answers with (OpenAI-compatible)")
async def models(services: Services = Depends(get_services)) -> dict:
    return {"object": "list", "data": [
        {"id": services.embedder_name, "object": "model", "created": 0, "owned_by": "latentsearch"},
        {"id": services.llm_name, "object": "model", "created": 0, "owned_by": "latentsearch"},
        *([{"id": services.extractor_name, "object": "model", "created": 0, "owned_by": "latentsearch"}]
          if services.extractor_name != services.llm_name else []),
    ]}
