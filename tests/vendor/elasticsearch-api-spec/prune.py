"""Rebuild `elasticsearch-openapi-subset.json` from the upstream OpenAPI document.

    python tests/vendor/elasticsearch-api-spec/prune.py PATH/TO/elasticsearch-serverless-openapi.json

Keeps the operations whose request bodies latentsearch sends (PATHS), each reduced to its
operationId and requestBody, and every component schema and request body those reach through
`$ref` (the transitive closure), unchanged. Parameters and responses are dropped: the tests
validate request bodies only. The output is deterministic (sorted keys).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PATHS = {
    "/{index}": ["put"],  # indices.create: settings + mappings
    "/{index}/_mapping": ["put"],  # indices.put_mapping
    "/_bulk": ["post", "put"],
    "/{index}/_bulk": ["post", "put"],
    "/{index}/_search": ["post"],
    "/_msearch": ["post"],
    "/{index}/_msearch": ["post"],
    "/{index}/_count": ["post"],
    "/{index}/_doc/{id}": ["put", "post"],
}
REF = re.compile(r'"#/components/(schemas|requestBodies)/([^"]+)"')


def prune(doc: dict) -> dict:
    paths = {}
    for path, methods in PATHS.items():
        item = {}
        for m in methods:
            op = doc["paths"][path][m]
            item[m] = {k: op[k] for k in ("operationId", "summary", "requestBody") if k in op}
        paths[path] = item
    keep: dict[str, set[str]] = {"schemas": set(), "requestBodies": set()}
    todo = [json.dumps(paths)]
    while todo:
        for section, name in REF.findall(todo.pop()):
            if name not in keep[section]:
                keep[section].add(name)
                todo.append(json.dumps(doc["components"][section][name]))
    return {
        "openapi": doc["openapi"],
        "info": {**doc["info"], "x-pruned": "latentsearch: request bodies of PATHS in prune.py and what they reference"},
        "paths": paths,
        "components": {s: {n: doc["components"][s][n] for n in sorted(names)} for s, names in keep.items()},
    }


if __name__ == "__main__":
    source = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = Path(__file__).with_name("elasticsearch-openapi-subset.json")
    out.write_text(json.dumps(prune(source), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{out}: {len(out.read_bytes()) // 1024} KiB")
