"""The `latentsearch` command line: one module per command group, registered here, imported by nothing
but the console script.

    index.py   ingest, info, doctor, delete-index, mappings       ask.py     ask
    search.py  search, entities                          serve.py   serve
    deploy.py  export-onnx, opensearch-setup             demo.py    demo
    kb.py      link, kb build                            train.py   train extractor | mention-head
    eval.py    eval extraction | clustering | retrieval | rag | layer-sweep | entity-retrieval | linking
    data.py    data lentex | beir-subset | typed-mentions | linking
    vocab.py   vocab show | update | rebuild | merge | rename | drop | restore | export | import
    tune.py    tune strictness

Shared options live once in options.py; printing and error translation in output.py.
"""

from __future__ import annotations

import os
import sys

import typer

from latentsearch.cli import ask, data, demo, deploy, index, kb, search, serve, train, tune, vocab
from latentsearch.cli import eval as eval_group

app = typer.Typer(
    name="latentsearch",
    help=(
        "Retrieval that understands what a text implies. Ingest a corpus (chunks + dense vectors, "
        "latent entities and mention vectors) into OpenSearch, Elasticsearch or the embedded "
        "LanceDB engine, and search it.\n\n"
        "Quick start:  latentsearch demo\n\n"
        "Configuration: flags > LATENTSEARCH_* env (nested with __, e.g. LATENTSEARCH_BACKEND__URL) > "
        "latentsearch.toml/.yaml (or $LATENTSEARCH_CONFIG) > defaults."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="Show third-party warnings and logs (lance, transformers)")) -> None:
    """Quiet by default: third-party notices that need no action are hidden; -v shows them."""
    if verbose:
        os.environ["LANCEDB_LOG"] = "warn"
        os.environ["TRANSFORMERS_VERBOSITY"] = "warning"
    else:
        os.environ.setdefault("LANCEDB_LOG", "error")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


for group in (index, search, ask, serve, deploy, demo, kb, vocab):
    group.register(app)
app.add_typer(train.app, name="train")
app.add_typer(eval_group.app, name="eval")
app.add_typer(data.app, name="data")
app.add_typer(tune.app, name="tune")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for arg in sys.argv[1:]:  # Python keeps undecodable argv bytes as lone surrogates: refuse them up front
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            sys.stderr.write(f"error: argument {shown!r} is not valid UTF-8; pass names and paths as UTF-8\n")
            raise SystemExit(2) from None
    app()


if __name__ == "__main__":
    main()
