"""The import graph of ``harness``: no cycles, and no import from a lower layer to a higher one.

Every ``import`` statement counts, wherever it stands: at the top, inside a function, under
``if TYPE_CHECKING``.  (A function-local import still ties the two modules together; it only
hides the tie from a reader of the top of the file.)  Imports made by name at run time
(``importlib.import_module``: the CLI's command table) are not seen.

The contract is ``LAYERS`` below, top first: a module belongs to the layer of the longest
prefix that names it (a package names all its modules).  A module may import modules of its
own layer and of lower ones.  When modules move, edit the prefixes; a module that no prefix
names fails the test, so a new module is placed on purpose.  ``EXCEPTIONS`` lists the upward
imports still allowed, each with its reason; one that is no longer needed fails the test too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "harness"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("harness.__main__", "harness.cli", "harness.commands")),
    # the flows that drive the layers below: whole packages, and the modules of lower packages that
    # orchestrate their own package (build --dry-run, verify, doctor's needs, serve's plan, the sdist upstream)
    ("flows", ("harness.nightly", "harness.bisect", "harness.pipeline", "harness.bench", "harness.quality",
               "harness.build.plan", "harness.build.verify", "harness.build.needs", "harness.serve.plan",
               "harness.source.sdist_upstream")),
    ("build", ("harness.build", "harness.smoke")),
    ("serve", ("harness.serve",)),
    ("published builds", ("harness.build.published", "harness.build.manifest", "harness.smoke.results")),
    ("source", ("harness.source",)),
    ("recipe", ("harness.recipe",)),
    # the registries the recipe reads: backend names and option models, smoke check names
    ("registries", ("harness.backends", "harness.smoke.registry")),
    ("gguf files", ("harness.gguf_files",)),
    ("base", ("harness",)),
]  # fmt: skip

# (importer, imported): why it is still allowed
EXCEPTIONS: dict[tuple[str, str], str] = {
}  # fmt: skip


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The harness modules ``module`` imports (``from harness.x import name`` names harness.x unless
    ``name`` is a module itself)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [owner(a.name) for a in node.names if a.name.split(".")[0] == "harness"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "harness":
                continue
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else owner(base) for a in node.names]
        else:
            continue
        yield from (t for t in targets if t is not None and t != module)


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(package)
    return {m: set(_imported(m, p, known)) for m, p in known.items()}


def _registry_edge(importer: str, imported: str) -> bool:
    """A package's __init__ importing its own modules: the registry pattern (``smoke/__init__``
    lists its checks, ``backends/__init__`` its backends); the modules import the package's base
    types back.  Not a cycle between two things, so not counted as one."""
    return imported.startswith(importer + ".")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if _registry_edge(node, child):
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) where the imported module's layer is above the importer's."""
    found = []
    for importer, targets in sorted(edges.items()):
        for imported in sorted(targets):
            a, b = layer_of(importer), layer_of(imported)
            if a is not None and b is not None and b < a:
                found.append((importer, imported))
    return found


def test_the_import_graph_has_no_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles (function-local imports count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in graph() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer of tests/test_layering.py LAYERS: {unplaced}"


def test_no_module_imports_from_a_higher_layer() -> None:
    names = [name for name, _ in LAYERS]
    found = [(a, b) for a, b in upward(graph()) if (a, b) not in EXCEPTIONS]
    assert not found, "imports from a higher layer:\n" + "\n".join(
        f"{a} ({names[layer_of(a) or 0]}) imports {b} ({names[layer_of(b) or 0]})" for a, b in found
    )


def test_every_exception_is_still_needed() -> None:
    stale = set(EXCEPTIONS) - set(upward(graph()))
    assert not stale, f"EXCEPTIONS no longer needed (remove them): {sorted(stale)}"


def test_the_checks_see_function_local_imports_and_cycles(tmp_path: Path) -> None:
    """The graph sees an import inside a function and a relative import, and a cycle through them
    is found; an upward import is reported (the checks above cannot pass by seeing nothing)."""
    pkg = tmp_path / "harness"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from harness.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from harness.sub import X\n")  # registry: not a cycle
    (pkg / "cli.py").write_text("def f():\n    from harness import errors\n")
    (pkg / "errors.py").write_text("def g():\n    from . import console\n")
    (pkg / "console.py").write_text("import harness.errors\n")
    edges = graph(pkg)
    assert edges["harness.cli"] == {"harness.errors"}
    assert edges["harness.errors"] == {"harness.console"}
    assert cycles(edges) == [["harness.console", "harness.errors"]]
    assert ("harness.errors", "harness.cli") in upward({"harness.errors": {"harness.cli"}})
