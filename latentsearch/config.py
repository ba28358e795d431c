"""Typed configuration: one pydantic model read from defaults, a TOML/YAML file and `LATENTSEARCH_*` env.

Precedence (highest first): explicit overrides (CLI flags) > environment > config file > defaults.
Nested fields use `__` in env names, e.g. `LATENTSEARCH_BACKEND__URL=https://localhost:9200`,
`LATENTSEARCH_INGEST__EMBED_BATCH_SIZE=64`. The config file is `$LATENTSEARCH_CONFIG`, or
`./latentsearch.toml` / `./latentsearch.yaml` when present.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

BackendKind = Literal["embedded", "opensearch", "elasticsearch"]


def default_home() -> Path:
    """Where the embedded engine, caches and checkpoints live unless configured otherwise."""
    return Path(os.environ.get("LATENTSEARCH_HOME", Path.home() / ".latentsearch"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LatentEntityType(_Strict):
    """One latent entity type of an index, e.g. `disease`; `options` turns extraction into a choice."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Field-safe name: latent.<name>")
    description: str | None = Field(None, description="Natural-language type used in the prompt")
    options: list[str] | None = Field(None, description="Closed label set (supervised LentEx variant)")

    @property
    def prompt_name(self) -> str:
        return self.description or self.name.replace("_", " ")


class EntitySchema(_Strict):
    """The index's entity schema: what kind of text it holds and which latent entities to extract."""

    text_type: str = "document"
    query_text_type: str | None = Field(
        None, description="What questions are, for query-side extraction (e.g. 'biomedical claim'); default text_type"
    )
    latent_types: list[LatentEntityType] = Field(default_factory=list)

    @field_validator("latent_types", mode="before")
    @classmethod
    def _names_to_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [{"name": v.strip()} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> EntitySchema:
        names = [t.name for t in self.latent_types]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"latent entity types must be unique; repeated: {dupes}")
        return self

    @property
    def type_names(self) -> list[str]:
        return [t.name for t in self.latent_types]


class AuthConfig(_Strict):
    """How to authenticate against a cluster. `aws_sigv4` signs with boto3's default credentials."""

    kind: Literal["none", "basic", "api_key", "aws_sigv4"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    aws_region: str | None = None
    aws_service: Literal["es", "aoss"] = Field("es", description="`aoss` for OpenSearch Serverless")

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.kind == "basic" and not (self.username and self.password):
            raise ValueError("auth.kind=basic needs auth.username and auth.password")
        if self.kind == "api_key" and not self.api_key:
            raise ValueError("auth.kind=api_key needs auth.api_key")
        if self.kind == "aws_sigv4" and not self.aws_region:
            raise ValueError("auth.kind=aws_sigv4 needs auth.aws_region (e.g. us-east-1)")
        return self


class TLSConfig(_Strict):
    verify: bool = True
    ca_certs: Path | None = Field(None, description="CA bundle (PEM) used to verify the cluster")
    client_cert: Path | None = None
    client_key: Path | None = None


class BackendConfig(_Strict):
    """Which engine to talk to. With no `url` the embedded LanceDB engine is used."""

    kind: BackendKind | None = Field(None, description="Default: embedded without url, else opensearch")
    url: str | None = None
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TLSConfig = Field(default_factory=TLSConfig)
    timeout_s: float = 30.0
    max_retries: int = 3
    embedded_path: Path | None = Field(None, description="LanceDB folder; default $LATENTSEARCH_HOME/db")
    # per-document limits (issue 14): a record over one is dead-lettered alone, the rest of its batch lands
    max_depth: int = Field(20, ge=1, le=500, description="Deepest nesting of objects/arrays in one document "
                           "(OpenSearch's index.mapping.depth.limit)")
    max_fields: int = Field(1000, ge=1, description="Most leaf values in one document's metadata")
    max_field_chars: int = Field(100_000_000, ge=1, description="Longest string (text, title, metadata value or key)")
    lock_timeout_s: float = Field(120.0, gt=0, description="How long an embedded write waits for another writer")

    @property
    def resolved_kind(self) -> BackendKind:
        if self.kind:
            return self.kind
        return "opensearch" if self.url else "embedded"

    @property
    def resolved_embedded_path(self) -> Path:
        return self.embedded_path or default_home() / "db"


class VectorIndexConfig(_Strict):
    """k-NN field settings (OpenSearch `knn_vector` method)."""

    engine: Literal["lucene", "faiss"] = "lucene"
    space_type: Literal["cosinesimil", "l2", "innerproduct"] = "cosinesimil"
    m: int = Field(16, ge=2, le=512)
    ef_construction: int = Field(128, ge=8)
    ef_search: int = Field(100, ge=1)


class TextConfig(_Strict):
    """How `title` and `text` are analysed and searched (the `[text]` table)."""

    analyzer: Literal["standard", "english"] = Field(
        "english", description="OpenSearch analyzer of `title`, `text` and their combined field `content`: "
        "`english` (possessives, lowercase, English stop words, Porter stemming) or `standard` (lowercase words)"
    )


class ModelsConfig(_Strict):
    """Model locations. Names resolve to offline PyPI packages; any local path works too."""

    embedder: str = Field("all-MiniLM-L6-v2", description="sentence-transformers name or folder, or an "
                          "`export-onnx` folder (then onnxruntime embeds)")
    llm: str = Field("SmolLM2-135M-Instruct", description="Causal LM for latent entities (any chat model folder)")
    extractor_adapter: str = Field(
        "default", description="LoRA adapter folder for the extractor; `default` = the shipped one, `none` = base "
        "model; an `export-onnx` folder = the LLM with its adapter merged, run by onnxruntime"
    )
    extractor_int8: bool = Field(
        False, description="int8 dynamic quantisation of the extractor's Linear layers (PyTorch on CPU)"
    )
    extractor_bf16: Literal["off", "questions", "all"] = Field(
        "questions", description="bfloat16 Linear layers with oneDNN-packed weights (PyTorch extractor on a CPU with "
        "AMX or AVX512-BF16): `questions` (default) for question extraction only, where it is ~1.5x faster at the "
        "same retrieval quality, float32 where the CPU cannot; `all` for ingest too (an error where the CPU cannot; "
        "values agree ~90 % with float32, so cached values are re-extracted); `off`. true/false mean all/off. "
        "See the README's latency table"
    )
    extractor_url: str | None = Field(
        None, description="OpenAI-compatible API root (e.g. `latentsearch serve`'s http://host:8000/v1, vLLM, a "
        "hosted API): latent extraction, at ingest and for questions, runs there instead of in-process"
    )
    extractor_model: str | None = Field(
        None, description="Model name sent to `extractor_url`; default `<llm>+<adapter folder name>`, the name "
        "under which `latentsearch serve` answers with the adapter-merged extractor"
    )
    extractor_api_key: SecretStr | None = None
    extractor_concurrency: int = Field(4, ge=1, le=256, description="Requests in flight to `extractor_url`")
    mention_head: str = Field("default", description="Mention projection head folder; `default` = the shipped one")
    kb: str | None = Field(None, description="Entity-linking knowledge base (JSONL of {id, name, aliases, "
                           "description, type}); needed by `ingest.links` and `latentsearch link`")
    device: str = "cpu"

    @field_validator("extractor_bf16", mode="before")
    @classmethod
    def _bf16_from_bool(cls, value: Any) -> Any:
        """`true`/`false` (the setting's first form, and what env variables often say) mean `all`/`off`."""
        if isinstance(value, bool):
            return "all" if value else "off"
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return "all" if value.strip().lower() in ("true", "1", "yes") else "off"
        return value

    @model_validator(mode="after")
    def _one_weight_format(self) -> ModelsConfig:
        if self.extractor_int8 and self.extractor_bf16 == "all":
            raise ValueError("extractor_int8 and extractor_bf16 = 'all' both choose the extractor's Linear layers: "
                             "pick one (extractor_bf16 = 'questions' yields to int8)")
        return self


class IngestConfig(_Strict):
    chunk_tokens: int | None = Field(
        None, ge=16, description="Chunk size in embedder tokens; default min(512, embedder max length)"
    )
    chunk_overlap: int = Field(10, ge=0)
    embed_batch_size: int = Field(64, ge=1)
    latent: bool = Field(True, description="Extract latent entities when the entity schema lists types")
    extract_batch_size: int = Field(64, ge=1)
    mentions: bool = Field(
        False, description="Per-mention type-aware vectors (nested `mentions`); an LLM pass per chunk, "
        "slow on CPU, so off by default; `latentsearch entities` needs it"
    )
    links: bool = Field(
        False, description="Entity links (nested `links`) against the KB `models.kb`; the LLM runs only on "
        "ambiguous mentions, off by default"
    )
    latent_input: Literal["chunk", "title"] = Field(
        "chunk",
        description="What the extractor reads: each chunk's text, or the document title (one extraction per "
        "document, ~5x cheaper on CPU; chunks without a title fall back to their text)",
    )
    vocabulary: bool = Field(
        True, description="After ingest, update the index's value vocabulary (latent values grouped into concepts, "
        "`latentsearch vocab`); only when latent entities were extracted"
    )
    write_batch_size: int = Field(256, ge=1)
    max_retries: int = Field(5, ge=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    cache: bool = Field(True, description="Content-hash cache of processor outputs")


class RagConfig(_Strict):
    """RAG answers (`latentsearch ask`, `/rag`): the local LLM, or any OpenAI-compatible endpoint when `base_url` is set."""

    base_url: str | None = Field(None, description="OpenAI-compatible API root, e.g. http://localhost:8000/v1")
    model: str | None = Field(None, description="Model name for the endpoint; default models.llm")
    api_key: SecretStr | None = None
    k: int = Field(4, ge=1, le=50, description="Context passages per question")
    max_new_tokens: int = Field(64, ge=1, description="Answer length cap (SmolLM2 on CPU: keep it short)")
    passage_chars: int = Field(700, ge=100, description="Characters of each passage put into the prompt")
    timeout_s: float = 120.0


class Settings(BaseSettings):
    """All of latentsearch's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="LATENTSEARCH_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    index: str = Field("latentsearch", pattern=r"^[a-z0-9][a-z0-9_\-.]*$")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    entities: EntitySchema = Field(default_factory=EntitySchema)
    vector: VectorIndexConfig = Field(default_factory=VectorIndexConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    rag: RagConfig = Field(default_factory=RagConfig)
    home: Path = Field(default_factory=default_home, description="Caches, checkpoints, embedded db")
    data_dir: Path | None = Field(None, description="Root of the benchmark datasets (scifact/, wnut17/, "
                                  "20newsgroups/) that training and evaluation read (env LATENTSEARCH_DATA_DIR)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _embedded_under_home(self) -> Settings:
        if self.backend.embedded_path is None:
            self.backend.embedded_path = self.home / "db"
        return self

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


_explicit_config: ContextVar[Path | None] = ContextVar("latentsearch_config_file", default=None)


def find_config_file() -> Path | None:
    """`load_settings(config_file=...)`, else $LATENTSEARCH_CONFIG, else ./latentsearch.{toml,yaml,yml}."""
    if _explicit_config.get() is not None:
        return _explicit_config.get()
    explicit = os.environ.get("LATENTSEARCH_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"LATENTSEARCH_CONFIG points to {path}, which is not a file")
        return path
    for name in ("latentsearch.toml", "latentsearch.yaml", "latentsearch.yml"):
        if Path(name).is_file():
            return Path(name)
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix in {".yaml", ".yml"}:
        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"config file {path} must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    return data.get("latentsearch", data)


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = find_config_file()
        return read_config_file(path) if path else {}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults < file < env < overrides; `config_file` replaces the file lookup."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if config_file is None:
        return Settings(**overrides)
    if not Path(config_file).is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    token = _explicit_config.set(Path(config_file))
    try:
        return Settings(**overrides)
    finally:
        _explicit_config.reset(token)
