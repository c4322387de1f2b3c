"""House rules for the package's shape, checked on every `make test` (grimp reads the imports,
type-only imports under TYPE_CHECKING included; ast reads attribute access).

The command on its own: `.venv/bin/python -m pytest tests/test_architecture.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon"
ALLOWED_PRIVATE = {("os", "_exit")}  # the stdlib's own name for "leave now"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("daemon", include_external_packages=False, cache_dir=None)


def test_no_import_cycle_among_daemon_modules(graph: grimp.ImportGraph) -> None:
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.append(" -> ".join((module, *(chain or ()))))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", ["daemon.web", "daemon.metrics"])
def test_http_side_does_not_depend_on_the_daemon_class(graph: grimp.ImportGraph,
                                                        module: str) -> None:
    assert not graph.chain_exists(importer=module, imported="daemon.service")


def own_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: attributes it sets (`self._x = …`) and its own private
    functions, methods and classes."""
    stored = {node.attr for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)}
    defined = {node.name for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return {name for name in stored | defined if name.startswith("_")}


def test_no_module_reaches_another_modules_private_names() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        own = own_private_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr in own or (owner, node.attr) in ALLOWED_PRIVATE:
                continue
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: "
                         f"{ast.unparse(node)}")
    assert not found, "private names used from outside their module:\n" + "\n".join(found)


def test_no_class_over_two_hundred_lines() -> None:
    big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > 200:
                    big.append(f"{path.name}:{node.name} has {lines} lines")
    assert not big, big
