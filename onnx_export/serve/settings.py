"""Server settings: one pydantic model the CLI fills from flags and the app reads (no globals)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from latentsearch.config import Settings

MODEL_KINDS = ("embeddings", "chat", "extract", "mentions")


class ServeConfig(BaseModel):
    """How `latentsearch serve` runs. Models, backend and index come from the latentsearch `Settings`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_key: SecretStr | None = Field(None, description="When set, every route but /healthz and /ui needs it (401)")
    metrics_public: bool = Field(False, description="Serve /metrics without the key (for a Prometheus scraper that "
                                 "carries none); off by default: the metrics show routes, traffic and model names")
    max_batch: int = Field(32, ge=1, le=1024, description="Most inputs merged into one embedder call; 1 = no batching")
    max_batch_llm: int = Field(8, ge=1, le=256, description="Most prompts merged into one LLM call (chat, extract)")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="How long a batch waits for company once started (only when "
                                 "the previous call served several requests: a lone client never waits)")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Larger request bodies get 413")
    max_inputs: int = Field(256, ge=1, description="Most texts per request (embeddings, extract, mentions); more get 413")
    max_types: int = Field(16, ge=1, description="Most latent entity types per /extract request")
    max_tokens_limit: int = Field(512, ge=1, description="Largest max_tokens a chat or /rag request may ask for")
    max_prompt_chars: int = Field(16_000, ge=100, description="Most characters one request puts into LLM prompts "
                                  "(chat messages, /rag question, /extract texts)")
    body_timeout_s: float = Field(10.0, gt=0, description="A request body not fully received in this time gets 408")
    header_timeout_s: float = Field(10.0, gt=0, description="A connection that sends no complete request head in "
                                    "this time is closed")
    keep_alive_s: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this")
    max_connections: int = Field(256, ge=1, description="Concurrent connections+requests; more get 503 (uvicorn "
                                 "limit_concurrency)")
    preload: list[str] = Field(default_factory=lambda: ["embeddings"], description=f"Models loaded at start: {MODEL_KINDS}")
    mention_head: Path | None = Field(None, description="Mention projection head folder (default: the shipped one)")
    json_logs: bool = True
    settings: Settings = Field(default_factory=Settings, description="latentsearch config: models, backend, index")

    @field_validator("preload")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(MODEL_KINDS))
        if unknown:
            raise ValueError(f"unknown model(s) to preload {unknown}; choose from {', '.join(MODEL_KINDS)}")
        return value
