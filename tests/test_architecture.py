"""The architecture is a stack of floors, and a floor imports only from floors below it.

    6  latentsearch.cli                       the command line (imported by nothing)
    5  latentsearch.onnx_export, .lab         export + HTTP server; training, evaluation, data building
    4  latentsearch.query                     search, the rewriter, RAG, LangChain
    3  latentsearch.ingest                    readers, chunking, enrichment processors, bulk writes
    2  latentsearch.mappings, .models         index mappings; model runtime (torch and onnxruntime)
    1  latentsearch (config, dsl, cache, protocols, progress, backends)

The check reads every module's AST (function-level imports included), resolves the package-dir
mapping of pyproject.toml (`ingest/` is `latentsearch.ingest`), and fails on an upward or sideways
import between components and on any import cycle. A negative control runs the same check on a
small synthetic tree that breaks each rule.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: component (module prefix) -> floor; a module belongs to its longest matching prefix.
FLOORS: dict[str, int] = {
    "latentsearch": 1,
    "latentsearch.mappings": 2,
    "latentsearch.models": 2,
    "latentsearch.ingest": 3,
    "latentsearch.query": 4,
    "latentsearch.onnx_export": 5,
    "latentsearch.lab": 5,
    "latentsearch.cli": 6,
}


def package_dirs(repo: Path) -> dict[str, Path]:
    """Package name -> folder, from pyproject's `[tool.setuptools.package-dir]`."""
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {pkg: repo / folder for pkg, folder in mapping.items()}


def discover(dirs: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file for every .py under the mapped folders (a sub-mapping wins over its parent)."""
    modules: dict[str, Path] = {}
    for pkg, folder in sorted(dirs.items(), key=lambda kv: len(kv[0])):
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            owner = max((p for p in dirs if name == p or name.startswith(p + ".")), key=len)
            if owner == pkg:
                modules[name] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported first-party module, line) for every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in known else target, node.lineno))
    return [(t, line) for t, line in found if t == "latentsearch" or t.startswith("latentsearch.")]


def component(module: str, floors: dict[str, int]) -> str:
    return max((c for c in floors if module == c or module.startswith(c + ".")), key=len)


def violations(modules: dict[str, Path], floors: dict[str, int]) -> list[str]:
    """Every import that goes up or sideways between components, and every import cycle."""
    known = set(modules)
    problems: list[str] = []
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in sorted(modules.items()):
        src = component(name, floors)
        for target, line in imports_of(name, path, known):
            graph[name].add(target)
            dst = component(target, floors)
            if dst != src and floors[dst] >= floors[src]:
                problems.append(f"{path.name}:{line} {name} (floor {floors[src]}) imports {target} "
                                f"(floor {floors[dst]}): a floor imports only from floors below it")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_a_floor_and_nothing_cycles():
    modules = discover(package_dirs(REPO))
    assert "latentsearch.dsl" in modules and "latentsearch.ingest.pipeline" in modules  # the mapping resolved
    assert violations(modules, FLOORS) == []


def test_nothing_imports_the_cli():
    modules = discover(package_dirs(REPO))
    offenders = [f"{name} imports {target}" for name, path in modules.items() if not name.startswith("latentsearch.cli")
                 for target, _ in imports_of(name, path, set(modules)) if target.startswith("latentsearch.cli")]
    assert offenders == []


def test_library_code_names_no_shared_folder():
    """Data paths come from flags or config; the library never reaches for `../shared`."""
    shared_path = re.compile(r"""/\s*["']shared["']|Path\(\s*["']\.\./shared""")  # code that builds the path
    modules = discover(package_dirs(REPO))
    hits = [f"{p.relative_to(REPO)}" for p in modules.values() if shared_path.search(p.read_text())]
    assert hits == []
    assert shared_path.search('ROOT = Path(__file__).parents[2] / "shared" / "data"')  # the check can fail


@pytest.fixture()
def broken_tree(tmp_path: Path) -> dict[str, Path]:
    """A tiny package stack that breaks each rule once: up, sideways, and a cycle."""
    files = {
        "core/__init__.py": "",
        "core/config.py": "from latentsearch.query import search\n",  # floor 1 -> floor 4: up
        "models/__init__.py": "",
        "models/a.py": "def f():\n    from latentsearch.mappings import b\n",  # floor 2 -> floor 2: sideways
        "mappings/__init__.py": "",
        "mappings/b.py": "",
        "query/__init__.py": "",
        "query/search.py": "from latentsearch.query import rank\n",
        "query/rank.py": "import latentsearch.query.search\n",  # cycle search <-> rank
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return discover({"latentsearch": tmp_path / "core", "latentsearch.models": tmp_path / "models",
                     "latentsearch.mappings": tmp_path / "mappings", "latentsearch.query": tmp_path / "query"})


def test_negative_control_catches_up_sideways_and_cycles(broken_tree):
    found = violations(broken_tree, FLOORS)
    assert any("latentsearch.config (floor 1) imports latentsearch.query.search (floor 4)" in p for p in found)
    assert any("latentsearch.models.a (floor 2) imports latentsearch.mappings.b (floor 2)" in p for p in found)
    assert any(p.startswith("import cycle:") and "latentsearch.query.rank" in p for p in found)
    assert len(found) == 3


def test_the_runtime_classes_fill_the_seams(embedder) -> None:
    """The floors above talk to `latentsearch.protocols`; the shipped implementations must fit them."""
    from latentsearch.models.extractor import LatentEntityExtractor
    from latentsearch.protocols import ChatLLM, Embedder, LatentExtractor, Rewriter
    from latentsearch.query.rag import LocalLLM
    from latentsearch.query.rewriter import QueryRewriter

    assert isinstance(embedder, Embedder)
    assert isinstance(LocalLLM(), ChatLLM)  # loads nothing until asked to complete
    for cls, proto in ((LatentEntityExtractor, LatentExtractor), (QueryRewriter, Rewriter)):
        wanted = [m for m in vars(proto) if not m.startswith("_")]
        missing = [m for m in wanted if not hasattr(cls, m)]
        assert missing == [], f"{cls.__name__} lacks {missing} of {proto.__name__}"
    assert not isinstance(object(), Embedder)  # the check can fail
