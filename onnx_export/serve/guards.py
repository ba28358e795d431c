"""The checks every route shares (issue 14), so no route can forget one: the index name, the one
generation-token limit (chat, /rag, /extract) and the prompt-length bound."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from latentsearch.onnx_export.serve.errors import ApiError
from latentsearch.onnx_export.serve.services import Services

INDEX_PATTERN = r"^[a-z0-9][a-z0-9_\-.]*$"
#: The `index` field of every request body: the same rule as the config's `index` (and OpenSearch's),
#: checked before any backend call, so `../x` or a 300-character name never reaches the filesystem.
IndexName = Annotated[str, Field(min_length=1, max_length=255, pattern=INDEX_PATTERN,
                                 description="Index name (lowercase letters, digits, '-', '_', '.')")]
_INDEX_RE = re.compile(INDEX_PATTERN)


def resolve_index(services: Services, index: str | None) -> str:
    """The request's index or the server's default, validated (422 on a bad name)."""
    name = services.settings.index if index is None else index
    if not (1 <= len(name) <= 255 and _INDEX_RE.match(name) and "__" not in name):
        raise ApiError(422, f"invalid index name {name[:80]!r}: use lowercase letters, digits, '-', '_' or '.', "
                       "at most 255 characters, without '__'", "invalid_index_name")
    return name


def generation_budget(services: Services, requested: int | None, default: int) -> int:
    """One token limit for every route that generates: `--max-tokens-limit` (413 above it)."""
    limit = services.config.max_tokens_limit
    budget = requested or min(default, limit)
    if budget > limit:
        raise ApiError(413, f"max_tokens = {budget} is above this server's limit of {limit} (--max-tokens-limit)",
                       "max_tokens_too_large")
    return budget


def check_prompt(services: Services, texts: list[str], what: str) -> None:
    """Prompt-length bound: the characters one request puts into LLM prompts (413 above it)."""
    limit = services.config.max_prompt_chars
    total = sum(len(t) for t in texts)
    if total > limit:
        raise ApiError(413, f"{what} holds {total} characters; this server takes at most {limit} per request "
                       "(--max-prompt-chars)", "prompt_too_long")
