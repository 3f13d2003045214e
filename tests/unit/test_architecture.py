"""The layout's rules, held by a test: import directions, third-party corners, no cycles, module size."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mailrules"

# library -> the only places (relative to mailrules/) allowed to import it
CORNERS = {
    "imapclient": ("imap/",),
    "lark": ("dsl/",),
    "regex": ("dsl/userregex.py",),
    "apscheduler": ("daemon/scheduler.py",),
    "prometheus_client": (
        "daemon/metrics.py",
        "daemon/oauth_metrics.py",
        "daemon/cluster_metrics.py",
        "daemon/stall_metrics.py",
        "daemon/notify_metrics.py",
        "daemon/ahead_metrics.py",
        "daemon/flag_metrics.py",
    ),
    "psycopg": ("state/",),
    "psycopg_pool": ("state/",),
    "authlib": ("oauth/client.py",),
    "requests": ("oauth/client.py",),
}
# pure packages: no I/O libraries
PURE = ("dsl/", "compile/")
IO_MODULES = {"socket", "ssl", "sqlite3", "smtplib", "imaplib", "imapclient", "http", "urllib", "subprocess"}
MAX_LINES = 500


@cache
def _names() -> frozenset[str]:
    """Every module of the package, dotted (packages by their own name)."""
    out = set()
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return frozenset(out)


def _dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every module an import statement anywhere in the file names (TYPE_CHECKING and function bodies too)."""
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from mailrules.x import y` where y is a module names y; other names name x itself
            submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in _names()]
            yield from submodules
            if len(submodules) < len(node.names):
                yield module


def _modules() -> list[tuple[str, str, list[str]]]:
    """(path relative to mailrules/, dotted name, imported names) for every module."""
    return [
        (p.relative_to(PACKAGE).as_posix(), _dotted(p), list(_imports(p)))
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


def _internal(name: str) -> str | None:
    """The package module an imported name refers to (the longest known prefix), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in _names():
            return candidate
        parts.pop()
    return None


def test_third_party_libraries_stay_in_their_corner() -> None:
    offenders = []
    for rel, _, names in _modules():
        for name in names:
            allowed = CORNERS.get(name.split(".")[0])
            if allowed is not None and not rel.startswith(allowed):
                offenders.append(f"{rel} imports {name}")
    assert offenders == [], "\n".join(offenders)


# (importer prefix, imported prefix, why it is forbidden)
FORBIDDEN = [
    ("mailrules.engine", "mailrules.daemon", "the engine runs under the daemon, never the other way"),
    ("mailrules.engine", "mailrules.commands", "the engine runs under the commands, never the other way"),
    ("mailrules.engine", "mailrules.cli", "the engine knows nothing of the command line"),
    ("mailrules.engine", "mailrules.imap", "the engine codes against ports; imap/ implements them"),
    ("mailrules.engine", "mailrules.smtp", "the engine codes against ports; smtp/ implements them"),
    ("mailrules.engine", "mailrules.state.store", "the engine codes against the Journal port, not SQLite"),
    ("mailrules.engine", "mailrules.state.sqlite", "the engine codes against the Journal port, not SQLite"),
    ("mailrules.engine", "mailrules.state.postgres", "the engine codes against the Journal port"),
    ("mailrules.daemon", "mailrules.commands", "commands and daemon are siblings on top of the engine"),
    ("mailrules.commands", "mailrules.daemon", "commands and daemon are siblings on top of the engine"),
    ("mailrules.dsl", "mailrules.compile", "the language is read before it is compiled"),
    ("mailrules.dsl", "mailrules.engine", "dsl/ is below the engine"),
    ("mailrules.compile", "mailrules.engine", "compile/ is below the engine"),
    ("mailrules.imap", "mailrules.engine.core", "imap/ implements ports; it does not drive the engine"),
    ("mailrules.state", "mailrules.engine.core", "state/ implements ports; it does not drive the engine"),
]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_imports_run_one_way() -> None:
    offenders = []
    for rel, here, names in _modules():
        for name in names:
            target = _internal(name)
            if target is None:
                continue
            for src, dst, why in FORBIDDEN:
                if _within(here, src) and _within(target, dst):
                    offenders.append(f"{rel} imports {target}: {why}")
            if target in ("mailrules.cli",) and here != "mailrules.__main__":
                offenders.append(f"{rel} imports {target}: only __main__ starts the command line")
            if target.startswith("mailrules.daemon") and not (
                here.startswith("mailrules.daemon") or here == "mailrules.cli"
            ):
                offenders.append(f"{rel} imports {target}: only the command line starts the daemon")
    assert offenders == [], "\n".join(offenders)


def test_engine_ports_import_nothing_else_of_the_engine() -> None:
    offenders = []
    for rel, here, names in _modules():
        if here != "mailrules.engine.ports":
            continue
        for name in names:
            target = _internal(name)
            if target and target.startswith("mailrules.engine") and target not in ("mailrules.engine", here):
                offenders.append(f"{rel} imports {target}")
    assert offenders == [], "\n".join(offenders)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for _, here, names in _modules():
        edges = {t for n in names if (t := _internal(n)) and t != here and t != "mailrules"}
        # importing a.b.c also runs a.b's __init__: only a cycle through real code counts
        graph[here] = edges
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_language_and_planner_do_no_io() -> None:
    offenders = []
    for rel, _, names in _modules():
        if rel.startswith(PURE):
            offenders += [f"{rel} imports {n}" for n in names if n.split(".")[0] in IO_MODULES]
    assert offenders == [], "\n".join(offenders)


def test_no_module_over_the_size_limit() -> None:
    big = [
        f"{rel}: {n} lines"
        for rel, _, _ in _modules()
        if (n := len((PACKAGE / rel).read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert big == []


def test_every_module_has_a_docstring() -> None:
    missing = [
        rel
        for rel, _, _ in _modules()
        if not ast.get_docstring(ast.parse((PACKAGE / rel).read_text(encoding="utf-8")))
        and (PACKAGE / rel).read_text(encoding="utf-8").strip()
    ]
    assert missing == []


# -- no reach into private parts across packages ---------------------------------------------------

_IMAPLIB_INTERNALS = (
    "imaplib has no public call to send a command and read its continuations or untagged lines as "
    "they come (IDLE, AUTHENTICATE with an error challenge): imap/ drives imaplib's own tagging, "
    "reading and BYE handling, nothing else does"
)
#: Private names of third-party objects -> (the one place allowed to use them, why).
FOREIGN_PRIVATE = {
    name: ("imap/", _IMAPLIB_INTERNALS)
    for name in ("_new_tag", "_command", "_get_response", "_get_tagged_response", "_check_bye", "_get_line")
}
FOREIGN_PRIVATE["_exit"] = ("cliexit.py", "os._exit (public, underscored): leave without Python's teardown")


def _package(module: str) -> str:
    """`mailrules.imap` for mailrules.imap.session; a top-level module is its own package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module + ".__init__" in _init_modules() else module


@cache
def _init_modules() -> frozenset[str]:
    return frozenset(_dotted(p) + ".__init__" for p in PACKAGE.rglob("__init__.py"))


@cache
def _private_definitions() -> dict[str, frozenset[str]]:
    """Each private name (`_x`) defined in mailrules -> the modules that define it (a function,
    class or method, an assignment to a name or an attribute)."""
    found: dict[str, set[str]] = {}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            else:
                continue
            if name.startswith("_") and not name.startswith("__"):
                found.setdefault(name, set()).add(_dotted(p))
    return {k: frozenset(v) for k, v in found.items()}


def _bindings(tree: ast.Module, here: str) -> dict[str, str]:
    """Module-level names -> the mailrules module they come from (imports) or `here` (defined here)."""
    package = here if here + ".__init__" in _init_modules() else here.rsplit(".", 1)[0]
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            for a in node.names:
                target = f"{base}.{a.name}" if f"{base}.{a.name}" in _names() else base
                if target.startswith("mailrules"):
                    out[a.asname or a.name] = target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mailrules") and a.asname:
                    out[a.asname] = a.name
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[node.name] = here
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Name):
                    out[t.id] = here
    return out


def _annotation_owner(annotation: ast.expr | None, bindings: dict[str, str]) -> str | None:
    """The mailrules module a parameter's annotation names (`ImapSession`, `X | None`), if one."""
    if annotation is None:
        return None
    owners = {bindings[n.id] for n in ast.walk(annotation) if isinstance(n, ast.Name) and n.id in bindings}
    return owners.pop() if len(owners) == 1 else None


def _private_reaches(rel: str, here: str) -> Iterator[str]:
    """Every `obj._name` in the module that reaches into another package's private part."""
    tree = ast.parse((PACKAGE / rel).read_text(encoding="utf-8"))
    bindings = _bindings(tree, here)
    typed: dict[ast.AST, dict[str, str]] = {}  # attribute node -> the typed parameters in scope
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
            params = {
                a.arg: owner for a in args if (owner := _annotation_owner(a.annotation, bindings)) is not None
            }
            for node in ast.walk(fn):
                typed.setdefault(node, {}).update(params)
    definitions = _private_definitions()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        receiver = node.value
        if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
            continue
        owner = None
        if isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name):
            owner = bindings.get(receiver.func.id)  # a constructor: `SmtpSender(p)._x`
        elif isinstance(receiver, ast.Name):
            owner = typed.get(node, {}).get(receiver.id) or bindings.get(receiver.id)
        where = f"{rel}:{node.lineno}: {ast.unparse(receiver)}.{node.attr}"
        if owner is not None:
            if _package(owner) != _package(here):
                yield f"{where} (private to {owner})"
            continue
        defined = definitions.get(node.attr, frozenset())
        if not defined:
            place, _ = FOREIGN_PRIVATE.get(node.attr, ("", ""))
            if not (place and rel.startswith(place)):
                yield f"{where} (a third-party private: list it in FOREIGN_PRIVATE with the reason)"
        elif not any(_package(m) == _package(here) for m in defined):
            yield f"{where} (private to {', '.join(sorted(defined))})"


def test_no_reach_into_private_parts_across_packages() -> None:
    """`obj._name` only where `_name` belongs to the same package (or to `self`/`cls`): a package's
    private parts can change without another package noticing. A receiver typed by its parameter's
    annotation, a constructor call or an imported name is held to its class's package; otherwise
    the name must be defined in this package. Third-party privates only where FOREIGN_PRIVATE says."""
    offenders = [line for rel, here, _ in _modules() for line in _private_reaches(rel, here)]
    assert offenders == [], "\n".join(offenders)
