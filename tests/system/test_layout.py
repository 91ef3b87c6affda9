"""The package's layout, computed from its own imports (``ast``, source text only): no import
circle between modules or between rooms, no room importing a room on a higher floor, no import
of another room's private name, no module over 500 lines and no function over 80 lines without
a stated reason. CONTRIBUTING.md has the same table of rooms in words."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "sast"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
LONG_REASON = "It is long because"
"""What the docstring of a function over MAX_FUNCTION_LINES says, followed by why."""

FLOORS = {
    "surrogate": 1, "infra": 1,
    "kernels": 2,
    "neuron": 3,
    "layers": 4, "classifier": 4, "models": 4, "init": 4, "optim": 4, "quantise": 4, "data": 4,
    "config": 5,
    "runs": 6, "evaluation": 6, "diagnostics": 6,
    "training": 7, "deploy": 7, "interop": 7,
    "protocol": 8,
    "study": 9,
    "cli": 10,
    "__main__": 11,
}
"""Each room's floor: a room may import rooms on its own floor or below, never above (and the
circle check keeps imports within a floor one-way)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """``sast.study.report.runs`` → ``study``; the package's face ``sast`` → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def scan() -> tuple[dict[str, Path], dict[str, set[str]], list[str]]:
    """(modules, module → modules it imports, private imports across rooms)."""
    files = sorted((SRC / PACKAGE).rglob("*.py"))
    modules = {module_name(f): f for f in files}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private = []

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if _in_type_checking(node, parents):
                continue
            if isinstance(node, ast.Import):
                targets = [(owner(a.name), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                if base.split(".")[0] != PACKAGE:
                    continue
                targets = []
                for a in node.names:
                    full = f"{base}.{a.name}"
                    target = owner(full) if full in modules else owner(base)
                    targets.append((target, a.name))
                    if (a.name.startswith("_") and not a.name.startswith("__")
                            and full not in modules and target and room(target) != room(module)):
                        private.append(f"{module} imports {a.name} from {target}")
            else:
                continue
            for target, _ in targets:
                if target and target != module:
                    edges[module].add(target)
    return modules, edges, private


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def room_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports between rooms, leaving out the package's face (it re-exports everything)."""
    out: dict[str, set[str]] = {}
    for a, targets in edges.items():
        for b in targets:
            if room(a) and room(b) and room(a) != room(b):
                out.setdefault(room(a), set()).add(room(b))
                out.setdefault(room(b), set())
    return out


def long_functions(modules: dict[str, Path]) -> list[str]:
    found = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and LONG_REASON not in (
                        ast.get_docstring(node) or ""):
                    found.append(f"{module}.{node.name} ({length} lines)")
    return found


@pytest.fixture(scope="module")
def graph():
    return scan()


def test_the_scanner_finds_circles_and_upward_imports():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    edges = room_edges({"sast.x.m": {"sast.y.n", "sast.x.k", "sast"}, "sast": {"sast.x.m"}})
    assert edges == {"x": {"y"}, "y": set()}


def test_no_import_circle_between_modules_or_rooms(graph):
    _, edges, _ = graph
    assert circles(edges) == []
    assert circles(room_edges(edges)) == []


def test_every_room_has_a_floor_and_imports_nothing_above_it(graph):
    modules, edges, _ = graph
    rooms = {room(m) for m in modules} - {""}
    assert rooms <= set(FLOORS), f"rooms without a floor: {sorted(rooms - set(FLOORS))}"
    upward = [f"{a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]})"
              for a, targets in room_edges(edges).items() for b in targets
              if FLOORS[b] > FLOORS[a]]
    assert upward == []


def test_no_room_imports_another_rooms_private_names(graph):
    assert graph[2] == []


def test_no_module_over_the_size_limit(graph):
    modules, _, _ = graph
    big = {m: n for m, p in modules.items()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert big == {}


def test_no_long_function_without_a_stated_reason(graph):
    assert long_functions(graph[0]) == []


def test_every_sub_package_says_what_it_holds_and_may_import(graph):
    modules, _, _ = graph
    packages = [p for m, p in modules.items() if p.name == "__init__.py" and m != PACKAGE]
    for path in packages:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert "import" in doc and len(doc) > 150, f"{path}: say what it holds and may import"
