"""Wire models: what each endpoint accepts and returns (these are the published OpenAPI schemas).

The `/v1/*` models follow OpenAI's shapes closely enough for the `openai` client, LangChain and
OpenSearch ML Commons connectors; fields those clients send that we cannot honour are refused with
a message rather than silently ignored (token-array inputs, `n` > 1 with streaming, ...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from latentsearch.query.retrieval import Retrieval
from latentsearch.query.search import Fusion, SearchMode

Text = Annotated[str, Field(min_length=1, pattern=r"\S", description="Non-blank text")]


class _Lenient(BaseModel):
    """OpenAI clients send fields we do not use (`user`, `logprobs`, ...): accept and ignore them."""

    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----- errors ---------------------------------------------------------------------------------

class ErrorBody(BaseModel):
    message: str = Field(description="What went wrong and, where possible, how to fix it")
    type: str = Field(description="invalid_request_error | authentication_error | request_too_large | "
                                  "not_found | service_unavailable | backend_error | server_error")
    param: str | None = Field(None, description="The request field at fault, when one is (e.g. `model`)")
    code: str | None = None
    details: list[dict[str, Any]] | None = Field(None, description="Per-field validation errors (422)")


class ErrorResponse(BaseModel):
    """Every error, OpenAI-style, so OpenAI clients surface the message."""

    error: ErrorBody


# ----- /v1/embeddings -------------------------------------------------------------------------

class EmbeddingRequest(_Lenient):
    input: Text | Annotated[list[Text], Field(min_length=1)] = Field(
        description="A text or a non-empty list of texts. Token-id arrays are refused: send text "
                    "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))."
    )
    model: str | None = Field(None, description="The embedding model (GET /v1/models); omitted: the configured "
                                                "embedder; any other name gets 404 model_not_found")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's dimension when given")
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_token_arrays(cls, data: Any) -> Any:
        value = data.get("input") if isinstance(data, dict) else None
        if isinstance(value, list) and value and all(isinstance(v, int | list) for v in value):
            raise ValueError("`input` holds token ids; this server embeds text: send strings "
                             "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))")
        if isinstance(value, list) and not value:
            raise ValueError("`input` is an empty list: send at least one text")
        return data

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 bytes")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


# ----- /v1/chat/completions -------------------------------------------------------------------

class ContentPart(_Lenient):
    type: str = Field(description="Only `text` parts are read")
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class ChatCompletionRequest(_Lenient):
    model: str | None = Field(None, description="A chat model of GET /v1/models: the chat LLM, or the extractor's "
                                "name for the adapter-merged extractor LM; omitted: the chat LLM; any other name "
                                "gets 404 model_not_found")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="New tokens at most (default 128)")
    max_completion_tokens: int | None = Field(None, ge=1, description="Alias of max_tokens (newer clients)")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy (deterministic)")
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=8)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = Field(None, description="{\"include_usage\": true}: a last chunk with "
                                                  "`usage` and no choices")
    seed: int | None = Field(None, description="Accepted; sampling is not seeded per request")
    user: str | None = None
    tools: list[Any] | None = Field(None, description="Not supported: a request with tools gets 400")
    tool_choice: Any = Field(None, description="Only `none` (or absent) is accepted")
    functions: list[Any] | None = Field(None, description="Not supported (legacy function calling): 400")
    response_format: dict[str, Any] | None = Field(None, description="Only {\"type\": \"text\"}; JSON modes get 400")

    def unsupported(self) -> str | None:
        """Why the request asks for something this server would otherwise silently drop (None: it does not)."""
        if self.tools or self.functions or self.tool_choice not in (None, "none"):
            return ("tools / function calling is not supported by this server (the local LLM has no tool use): "
                    "send the request without `tools`, `functions` and `tool_choice`")
        if self.stream and self.n > 1:
            return "`n` > 1 cannot be streamed here: send n = 1 with `stream`, or `stream: false`"
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            return (f"response_format {kind!r} is not supported (no constrained JSON output here); supported: "
                    "{\"type\": \"text\"}")
        return None

    def budget(self, default: int = 128) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


# ----- /extract -------------------------------------------------------------------------------

class LatentTypeSpec(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_ \-]*$",
                      description="Key in the result, e.g. `disease`")
    description: str | None = Field(None, max_length=200, description="Type as worded in the prompt (default: name)")
    options: list[Text] | None = Field(None, min_length=2, max_length=32,
                                      description="Closed label set: the answer is the likeliest option, never free text")

    @property
    def prompt_name(self) -> str:
        return self.description or self.name.replace("_", " ")


class ExtractRequest(_Strict):
    texts: list[Text] = Field(min_length=1, description="Texts (chunks) to read")
    text_type: Text = Field("document", max_length=100, description="What the texts are, e.g. 'news article'")
    types: list[LatentTypeSpec] = Field(min_length=1, description="Latent entity types to extract")


class ExtractResult(BaseModel):
    index: int
    latent: dict[str, list[str]] = Field(description="type name -> values (empty when the model gives nothing usable)")


class ExtractResponse(BaseModel):
    model: str
    results: list[ExtractResult]
    took_ms: float


# ----- /mentions ------------------------------------------------------------------------------

class MentionsRequest(_Strict):
    texts: list[Text] = Field(min_length=1, description="Texts to find entity mentions in")
    types: list[Text] | None = Field(None, description="Entity type descriptions to embed the same way "
                                                       "(query vectors for a nested k-NN over mentions)")


class Mention(BaseModel):
    start: int = Field(description="Character offset (inclusive)")
    end: int = Field(description="Character offset (exclusive)")
    text: str
    vector: list[float] = Field(description="Type-aware mention vector")


class MentionsResult(BaseModel):
    index: int
    mentions: list[Mention]


class MentionsResponse(BaseModel):
    model: str
    dimension: int
    results: list[MentionsResult]
    type_vectors: list[list[float]] | None = Field(None, description="One vector per requested type, in order")
    took_ms: float


# ----- /search --------------------------------------------------------------------------------

class SearchRequest(_Strict):
    query: Text = Field(max_length=4000, description="The question")
    index: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[a-z0-9][a-z0-9_\-.]*$",
                              description="Default: the server's --index")
    k: int = Field(10, ge=1, le=1000)
    mode: SearchMode = "dense"
    filter: dict[str, Any] | None = Field(None, description="OpenSearch DSL clause or shorthand {field: value | "
                                                            "[values] | {gte: ...}} (placed inside the k-NN clause)")
    collapse: bool = Field(True, description="One hit per document (its best chunk); plain search only")
    rewrite: bool = Field(True, description="dense/hybrid: let the query rewriter add latent-entity filters "
                                            "(it falls back to plain search on an index without latent types)")
    strictness: str | int = Field("auto", description="Rewriter strictness: auto, strict, loose, none, an int "
                                                      "(entities required) or a percent such as '60%'")
    fusion: Fusion | None = Field(None, description="hybrid: rrf or min_max (default: the fitted one)")
    weights: tuple[float, float] | None = Field(None, description="hybrid min_max: (BM25, k-NN) weights")
    include_dsl: bool = False


class SearchResponse(Retrieval):
    """Exactly `latentsearch search --json`: plain search, or the rewriter's hits with its explanation."""


# ----- ops ------------------------------------------------------------------------------------

class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    models_loaded: list[str]
    batching: dict[str, int | float]
    index: str
    backend: str
