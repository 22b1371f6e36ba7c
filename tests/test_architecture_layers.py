"""Imports flow downwards only, as docs/architecture.md draws the layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sincere"

# Higher numbers sit higher in the diagram; a module may import its own rank or lower.
RANK = {
    "core": 0,
    "catalog": 1,
    "workload": 1,
    "perf": 2,
    "predict": 2,
    "estimate": 2,
    "policy": 3,
    "engine": 4,
    "sim": 5,
    "optimize": 6,
    "serve": 7,
    "bench": 7,
    "profile": 7,
    "fit": 7,
    "experiment": 7,
    "cli": 8,
}


# Inside serve/: the shared wire format and socket helpers at the bottom, the engine-side
# pieces (backend clients, emulated engines, security blocks) above them, then the two
# planes side by side -- the gateway (data plane) and the control plane, which meet only
# through the control plane's Fleet protocol -- and on top the composition root (app.py),
# the one module that imports both.
SERVE_RANK = {
    "lax": 0,  # reading scalars as vLLM's pydantic models do
    "binding": 0,
    "content": 0,  # a prompt's content: block ids, image placeholders
    "protocol": 1,  # the wire format, which reads content
    "backends": 2,
    "emulator": 2,
    "security": 2,
    "gateway": 3,
    "control": 3,
    "app": 4,
}

# The one import between the planes, and why: the gateway's config file embeds the control
# plane's sections (pure schema; it imports nothing of the gateway).
PLANE_EXCEPTIONS = {("gateway", "sincere.serve.control.config")}


def _modules(path: Path) -> set[str]:
    """Every ``sincere...`` module ``path`` imports (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("sincere.")}


def _imports(path: Path) -> set[str]:
    """The top-level sub-packages (layers) ``path`` imports."""
    return {m.split(".")[1] for m in _modules(path) if m.split(".")[1] in RANK}


def test_every_subpackage_has_a_rank() -> None:
    """A new top-level sub-package must be placed in the layer diagram (and here)."""
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(RANK), sorted(packages - set(RANK))


def test_imports_flow_downwards() -> None:
    """No module imports a sub-package that sits above its own layer."""
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if len(rel.parts) < 2 or rel.parts[0] not in RANK:
            continue
        own = RANK[rel.parts[0]]
        for target in _imports(path):
            if RANK[target] > own:
                upward.append(f"{rel} imports sincere.{target}")
    assert upward == []


def test_serve_parts_import_downwards() -> None:
    """A part of serve/ imports only lower parts: not its peers, so not the other plane."""
    upward = []
    for path in sorted((SRC / "serve").rglob("*.py")):
        rel = path.relative_to(SRC / "serve")
        own_part = rel.parts[0].removesuffix(".py")
        if own_part not in SERVE_RANK:
            continue
        for module in _modules(path):
            parts = module.split(".")
            if parts[:2] != ["sincere", "serve"] or len(parts) < 3 or parts[2] == own_part:
                continue
            if (own_part, module) in PLANE_EXCEPTIONS:
                continue
            if SERVE_RANK[parts[2]] >= SERVE_RANK[own_part]:
                upward.append(f"serve/{rel} imports {module}")
    assert upward == []


def _module_name(path: Path) -> str:
    """``sincere.a.b`` for ``src/sincere/a/b.py`` (a package for ``__init__.py``)."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (module -> modules it imports), or [] when none."""
    done: set[str] = set()
    for start in sorted(graph):
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return [*path, nxt]
                if nxt not in path and nxt not in done:
                    stack.append((nxt, [*path, nxt]))
        done.add(start)
    return []


def test_no_import_cycle_between_control_and_gateway() -> None:
    """The modules of serve/control and serve/gateway import each other in no cycle."""
    paths = sorted((SRC / "serve" / "control").rglob("*.py"))
    paths += sorted((SRC / "serve" / "gateway").rglob("*.py"))
    names = {_module_name(p) for p in paths}
    graph = {_module_name(p): {m for m in _modules(p) if m in names} for p in paths}
    assert len(graph) > 20
    assert _cycle(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle check above would report a gateway <-> controller loop."""
    graph = {"g.server": {"c.controller"}, "c.controller": {"c.fleet", "g.server"}}
    assert _cycle(graph) == ["c.controller", "g.server", "c.controller"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_control_plane_sees_the_gateway_only_through_the_fleet() -> None:
    """serve/control imports nothing of the gateway; the gateway only the control config."""
    found = []
    for plane, other in (("control", "gateway"), ("gateway", "control")):
        for path in sorted((SRC / "serve" / plane).rglob("*.py")):
            rel = path.relative_to(SRC)
            for module in _modules(path):
                if (
                    module.startswith(f"sincere.serve.{other}")
                    and (
                        plane,
                        module,
                    )
                    not in PLANE_EXCEPTIONS
                ):
                    found.append(f"{rel} imports {module}")
    assert found == []


def test_every_serve_part_has_a_rank() -> None:
    """A new module or package under serve/ must be placed in SERVE_RANK."""
    parts = {p.name.removesuffix(".py") for p in (SRC / "serve").iterdir()}
    parts -= {"__init__", "__pycache__"}
    assert parts <= set(SERVE_RANK), sorted(parts - set(SERVE_RANK))


# Modules of serve/ and bench/ that may import the simulator, and why.
SIM_USERS = {
    "bench/parity.py": "runs the simulator beside the live path to compare the two",
    "bench/pool_replay.py": "replays a simulated pool scenario live and compares the two runs",
    "serve/control/sim_scaling.py": "the live autoscaler decides with the simulator's rule "
    "(imported only when controller.autoscaling is set)",
}


def test_live_path_imports_nothing_from_the_simulator() -> None:
    """serve/ and bench/ build engines and summaries from engine/, never from sim/."""
    found = []
    for part in ("serve", "bench"):
        for path in sorted((SRC / part).rglob("*.py")):
            rel = str(path.relative_to(SRC))
            if rel in SIM_USERS:
                continue
            found += [f"{rel} imports {m}" for m in _modules(path) if m.startswith("sincere.sim")]
    assert found == []


def test_no_import_cycle_inside_the_engine() -> None:
    """The engine's modules import one another one way only (imports inside functions and
    under TYPE_CHECKING included): the two request-level engines share
    ``engine.request_batches``, and the config that builds either imports both."""
    paths = sorted((SRC / "engine").rglob("*.py"))
    names = {_module_name(p) for p in paths}
    graph = {_module_name(p): {m for m in _modules(p) if m in names} for p in paths}
    assert graph["sincere.engine.request_level"] >= {"sincere.engine.sincere_server"}
    assert _cycle(graph) == []


# ------------------------------------------------------------------ private names

# Reads of another module's private names allowed in sim/ or serve/ (file, name): none are
# left, and none are added.
PRIVATE_READS_ALLOWED: set[tuple[str, str]] = set()

# Names that look private but are documented public API of the standard library.
STDLIB_PUBLIC = {"_exit", "_asdict", "_replace", "_fields", "_make"}


def _own_names(tree: ast.Module) -> set[str]:
    """The names a module defines itself: functions, classes, attributes it assigns, and
    module- or class-level variables. Reading one of these is no reach into another."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.attr)
    bodies = [tree.body] + [c.body for c in ast.walk(tree) if isinstance(c, ast.ClassDef)]
    for body in bodies:
        for stmt in body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else []
            if isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in STDLIB_PUBLIC


def _private_reads(source: str) -> set[str]:
    """Private names of other modules that ``source`` reads: ``obj._name`` (not on
    ``self``, ``cls`` or ``super()``) where this module defines no ``_name``, and
    ``from module import _name``."""
    tree = ast.parse(source)
    own = _own_names(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.update(a.name for a in node.names if _is_private(a.name))
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            continue
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
            continue
        if node.attr not in own:
            found.add(node.attr)
    return found


def _private_reads_in(*parts: str) -> set[tuple[str, str]]:
    found = set()
    for part in parts:
        for path in sorted((SRC / part).rglob("*.py")):
            rel = str(path.relative_to(SRC))
            found |= {(rel, name) for name in _private_reads(path.read_text(encoding="utf-8"))}
    return found


def test_no_module_reads_another_modules_private_names() -> None:
    """serve/ and sim/ use other modules through their public names only (sim/'s listed
    leftovers aside); a private name is its module's to change."""
    found = _private_reads_in("serve", "sim")
    assert sorted(found - PRIVATE_READS_ALLOWED) == []
    assert not any(rel.startswith("serve/") for rel, _ in PRIVATE_READS_ALLOWED)


def test_the_private_names_list_holds_only_live_reads() -> None:
    """An entry of PRIVATE_READS_ALLOWED that no longer occurs is removed (it only shrinks)."""
    assert sorted(PRIVATE_READS_ALLOWED - _private_reads_in("sim")) == []


def test_private_read_finder_finds_reads_across_modules() -> None:
    """The finder reports another object's private attribute and a private import, not the
    module's own names, ``self`` / ``super()`` ones or documented stdlib ones."""
    source = (
        "import os\n"
        "from m import _helper\n"
        "class A:\n"
        "    def __init__(self, relay):\n"
        "        self._own = relay._failed\n"
        "        super()._base()\n"
        "    def f(self, other):\n"
        "        os._exit(0)\n"
        "        return other._own, self._anything\n"
    )
    assert _private_reads(source) == {"_helper", "_failed"}


# --------------------------------------------------------------------- class size

MAX_CLASS_LINES = 300

# Classes over MAX_CLASS_LINES outside serve/, with their size then (path, class): lines.
# Every one has been split: the list stays empty.
LONG_CLASSES: dict[tuple[str, str], int] = {}


def _class_lines() -> dict[tuple[str, str], int]:
    """Lines of every class in src/sincere (its ``class`` line to its last line)."""
    sizes = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                sizes[(rel, node.name)] = node.end_lineno - node.lineno + 1
    return sizes


def test_no_class_is_over_300_lines() -> None:
    """A class over 300 lines is split along its seams; the listed ones outside serve/ do
    not grow."""
    too_long = [
        f"{rel} {name}: {n} lines"
        for (rel, name), n in sorted(_class_lines().items())
        if n > LONG_CLASSES.get((rel, name), MAX_CLASS_LINES)
    ]
    assert too_long == []
    assert not any(rel.startswith("serve/") for rel, _ in LONG_CLASSES)


def test_the_long_classes_list_holds_only_long_classes() -> None:
    """An entry of LONG_CLASSES that is gone or now short enough is removed (it only shrinks)."""
    sizes = _class_lines()
    stale = [key for key in LONG_CLASSES if sizes.get(key, 0) <= MAX_CLASS_LINES]
    assert stale == []


# ------------------------------------------------------------------ engine capabilities
ENGINE_CLASSES = {"ContinuousEngine", "RequestLevelEngine", "SincereServerEngine"}


def _engine_class_checks(source: str) -> list[str]:
    """Names of engine classes ``source`` asks an object's class of (``isinstance``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            for sub in ast.walk(node.args[1]) if len(node.args) == 2 else ():
                if isinstance(sub, ast.Name) and sub.id in ENGINE_CLASSES:
                    found.append(sub.id)
    return found


def test_drivers_ask_engines_for_capabilities_not_classes() -> None:
    """sim/, serve/ and experiment/ use an engine's declared parts (``kv_intake``,
    ``batch_log()``, ``rejection_detail``...), never ``isinstance(engine, SomeEngine)``."""
    found = []
    for part in ("sim", "serve", "experiment"):
        for path in sorted((SRC / part).rglob("*.py")):
            rel = path.relative_to(SRC).as_posix()
            found += [f"{rel}: {name}" for name in _engine_class_checks(path.read_text("utf-8"))]
    assert found == []


def test_engine_class_check_finder_finds_one() -> None:
    """The finder sees an engine class alone and inside a union."""
    source = "isinstance(e, ContinuousEngine)\nisinstance(e, int | RequestLevelEngine)\n"
    assert _engine_class_checks(source) == ["ContinuousEngine", "RequestLevelEngine"]
