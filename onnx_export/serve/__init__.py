"""The model server (`latentsearch serve`): the project's models and search behind HTTP.

OpenAI-compatible `/v1/embeddings` and `/v1/chat/completions` (so the `openai` client, LangChain and
OpenSearch ML Commons connectors can call it), plus `/extract`, `/mentions`, `/search`, `/healthz`
and `/metrics`. Concurrent requests to one model are merged into one batched call (batching.py).

    from latentsearch.onnx_export.serve import ServeConfig, create_app
    app = create_app(ServeConfig(api_key="secret"))
"""

from latentsearch.onnx_export.serve.app import ROUTERS, create_app, run
from latentsearch.onnx_export.serve.settings import ServeConfig

__all__ = ["ROUTERS", "ServeConfig", "create_app", "run"]
