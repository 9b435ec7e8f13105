"""The package's shape, checked: layers, cycles, sizes, one owner of the envelope.

``docs/architecture.md`` draws the layers; these tests read every module of ``piiguard``
with :mod:`ast` (nothing is imported) and fail, naming the file and line, when:

- an import points up the layer list, or modules import each other in a cycle (late
  imports inside functions count too: a cycle hidden by a late import is still one);
- a file under ``piiguard/`` is longer than 600 lines;
- a module outside ``piiguard/crypto/`` slices envelope bytes or imports the envelope's
  layout constants (the envelope has one owner);
- a module reads another object's private attribute (``obj._name``) that it does not
  define itself (SQLAlchemy's private API is allowed only in the one module that lists it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "piiguard"

#: Layers, bottom first: a module may import its own layer and the ones below it.
LAYERS: list[tuple[str, ...]] = [
    ("piiguard.errors",),
    ("piiguard.validators",),
    ("piiguard.kinds",),
    ("piiguard.crypto",),
    ("piiguard.kms",),
    ("piiguard.keys",),
    ("piiguard.field",),
    ("piiguard.masking",),
    ("piiguard.guard",),
    ("piiguard.sqlalchemy", "piiguard.pydantic"),
    ("piiguard.fastapi", "piiguard.rotation"),
    ("piiguard._console",),
    ("piiguard.demo", "piiguard.testing", "piiguard.cli_jobs", "piiguard.cli_keys"),
    ("piiguard.cli",),
]
#: The package facade re-exports names from every layer; nothing inside imports it.
FACADE = "piiguard"
MAX_LINES = 600
#: Where SQLAlchemy's private API may be touched (the module that lists it, tested).
SA_PRIVATE_MODULES = {"piiguard.sqlalchemy._sa_private"}
#: Third-party private names one module may use, each with the test that notices when
#: the library drops it.
FOREIGN_PRIVATE_BY_MODULE = {
    # pydantic keeps the model being built on a stack with no public accessor; without
    # it policy labels degrade to the field name (test_masking_pydantic shows it).
    "piiguard.pydantic.serialization": {"_generate_schema"},
}
ENVELOPE_CONSTANTS = {"FORMAT_V1", "FLAG_PADDED", "HEADER_SIZE", "MIN_SIZE", "_NONCE_END"}
#: Private names of the standard library and of well-kept libraries that are their
#: documented API (namedtuple's helpers, sys, pydantic's and typer's hooks).
ALLOWED_FOREIGN_PRIVATE = {"_replace", "_asdict", "_fields", "_make", "_getframe",
                           "_exit", "_thread", "_value2member_map_", "_member_map_",
                           "_fields_set", "_mapping", "_tuple", "_t"}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


MODULES = dict(_modules())


def _resolve(name: str) -> str | None:
    """The piiguard module (or package) that ``name`` refers to, if any."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if hasattr(n, "lineno"):
                        lines.add(n.lineno)
    return lines


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """``(imported piiguard module, line)`` for every import in ``path`` (late ones
    too; imports only for type checking are skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                if target:
                    yield target, node.lineno
    # Strings in importlib.import_module("piiguard....") are imports too.
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") \
                and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            target = _resolve(node.args[0].value)
            if target:
                yield target, node.lineno


def _layer(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for target, line in _imports(module, path):
            if target != module:
                edges.setdefault(target, line)
    return graph


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if m != FACADE and _layer(m) is None]
    assert not unplaced, f"modules with no layer in LAYERS: {unplaced}"


def test_imports_point_down_the_layers():
    bad = []
    for module, edges in _graph().items():
        if module == FACADE:
            continue
        here = _layer(module)
        for target, line in edges.items():
            if target == FACADE:
                bad.append(f"{MODULES[module]}:{line}: {module} imports the facade "
                           "'piiguard' (import the module that defines the name)")
                continue
            there = _layer(target)
            if here is not None and there is not None and there > here:
                bad.append(f"{MODULES[module]}:{line}: {module} (layer {here}) imports "
                           f"{target} (layer {there})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    # The facade imports every layer, and Python loads it before any submodule; an
    # import *of* the facade is refused by test_imports_point_down_the_layers.
    graph = {m: {t: n for t, n in e.items() if t != FACADE}
             for m, e in _graph().items() if m != FACADE}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    n = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{MODULES[module]} has {n} lines (limit {MAX_LINES})"


def _outside_crypto() -> Iterator[tuple[str, Path]]:
    for module, path in MODULES.items():
        if not module.startswith("piiguard.crypto"):
            yield module, path


def test_no_envelope_layout_outside_crypto():
    bad = []
    offsets = {(1, 5), (5, 17), (17, None), (None, 5)}
    for _module, path in _outside_crypto():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "piiguard.crypto.envelope":
                names = {a.name for a in node.names} & ENVELOPE_CONSTANTS
                if names:
                    bad.append(f"{path}:{node.lineno}: imports {sorted(names)}")
            if isinstance(node, ast.Slice):
                bounds = tuple(b.value if isinstance(b, ast.Constant) else
                               (None if b is None else "?") for b in (node.lower, node.upper))
                if bounds in offsets:
                    bad.append(f"{path}:{node.lineno}: slice [{ast.unparse(node)}]")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd) \
                    and isinstance(node.right, ast.Constant) and node.right.value == 0xFE:
                bad.append(f"{path}:{node.lineno}: '& 0xFE' (format byte test)")
    assert not bad, "envelope layout outside piiguard/crypto:\n" + "\n".join(bad)


def _defined_private_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("_") and node.value.isidentifier():
            names.add(node.value)  # __slots__ entries
    return names


def test_no_private_attribute_read_across_modules():
    bad = []
    for module, path in MODULES.items():
        if module in SA_PRIVATE_MODULES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = _defined_private_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if attr in own or attr in ALLOWED_FOREIGN_PRIVATE \
                    or attr in FOREIGN_PRIVATE_BY_MODULE.get(module, ()):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            bad.append(f"{path}:{node.lineno}: reads {ast.unparse(node)}")
    assert not bad, "private attributes read across modules:\n" + "\n".join(bad)
