"""The command starts fast: ``--help`` and a verb import only what they need.

Timings are in ``benchmarks/cli_startup.py``; these tests pin the structure that makes
them (see the top of ``sincere/cli/app.py``), so they fail on an eager import, not on a
slow machine. Every verb and subcommand is found by reading the CLI modules (what they
register on the root app and on a verb's sub-app, from whichever module), and that list
is checked against the commands the app really has.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import sincere.cli

CLI_DIR = Path(sincere.cli.__file__).parent
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "scipy", "pyarrow", "matplotlib", "torch", "aiohttp", "pandas", "ray")
"""Modules that cost tens to hundreds of milliseconds to import."""
NOT_FOR_HELP = (*HEAVY, "pydantic")
"""What no ``--help`` imports: pydantic converts options when a verb runs, not for help
(see ``VerbGroup`` in ``sincere/cli/app.py``)."""

Loaded = Callable[..., set[str]]
Sincere = Callable[..., Any]


def _calls(tree: ast.AST) -> list[tuple[str, str, ast.Call]]:
    """``owner.method(...)`` calls of a module: (owner, method, call)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name):
                found.append((owner.id, node.func.attr, node))
    return found


def _text(node: ast.expr | None, constants: dict[str, str]) -> str:
    """A literal string, or a module-level string constant by name; "?" otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id, "?")
    return "?"


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


def _verb_of(call: ast.Call) -> str:
    """The ``name=`` of an ``app.add_typer(group, name=...)`` call."""
    name = next((k.value for k in call.keywords if k.arg == "name"), None)
    return _text(name, {})


def _verb_groups(tree: ast.Module) -> dict[str, str]:
    """Module-level ``variable = verb_group("verb", ...)`` assignments: variable -> verb."""
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Name):
            continue
        call = node.value
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "verb_group":
            found[node.targets[0].id] = _text(call.args[0], {})
    return found


def _sub_apps(trees: dict[str, ast.Module]) -> dict[tuple[str, str], str]:
    """(module, variable) -> verb, for each ``app.add_typer(variable, name=verb)`` and each
    ``variable = verb_group(verb, ...)``."""
    found = {}
    for module, tree in trees.items():
        if module == "app":  # its add_typer is verb_group's own, for whichever verb
            continue
        for owner, method, call in _calls(tree):
            if owner == "app" and method == "add_typer" and isinstance(call.args[0], ast.Name):
                found[(module, call.args[0].id)] = _verb_of(call)
        found.update({(module, var): verb for var, verb in _verb_groups(tree).items()})
    return found


def _groups_in(
    module: str, tree: ast.Module, sub_apps: dict[tuple[str, str], str]
) -> dict[str, str]:
    """Variables of ``module`` that are a verb's sub-app (its own or imported) -> the verb."""
    groups = {var: verb for (owner, var), verb in sub_apps.items() if owner == module}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sincere.cli."):
            source = (node.module or "").rsplit(".", 1)[1]
            for alias in node.names:
                if (source, alias.name) in sub_apps:
                    groups[alias.asname or alias.name] = sub_apps[(source, alias.name)]
    return groups


def registered_commands() -> dict[tuple[str, ...], str]:
    """Every command path the CLI modules register -> the module registering it."""
    trees = {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in CLI_DIR.glob("*.py")}
    sub_apps = _sub_apps(trees)
    found: dict[tuple[str, ...], str] = {}
    for module, tree in trees.items():
        constants, groups = _constants(tree), _groups_in(module, tree, sub_apps)
        for verb in _verb_groups(tree).values():
            found[(verb,)] = f"sincere.cli.{module}"
        for owner, method, call in _calls(tree):
            name = _text(call.args[0] if call.args else None, constants)
            if method == "command" and owner == "app":
                found[(name,)] = f"sincere.cli.{module}"
            elif method == "command" and owner in groups:
                found[(groups[owner], name)] = f"sincere.cli.{module}"
            elif method == "add_typer" and owner == "app" and module != "app":
                # (the app module's own add_typer is verb_group's, for whichever verb)
                found[(_verb_of(call),)] = f"sincere.cli.{module}"
    return found


COMMANDS = sorted(registered_commands())


@pytest.mark.parametrize("args", [("--help",), ("--version",), ()])
def test_root_help_and_version_import_nothing_heavy(
    args: tuple[str, ...], modules_loaded: Loaded
) -> None:
    """`sincere`, `sincere --help` and `--version` load no heavy library, nor pydantic."""
    loaded = modules_loaded(*args)
    assert loaded.isdisjoint(NOT_FOR_HELP), sorted(loaded & set(NOT_FOR_HELP))


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_imports_nothing_heavy(path: tuple[str, ...], modules_loaded: Loaded) -> None:
    """`sincere VERB [SUBCOMMAND] --help`, for every verb and subcommand, loads no heavy
    library, nor pydantic."""
    loaded = modules_loaded(*path, "--help")
    assert loaded.isdisjoint(NOT_FOR_HELP), sorted(loaded & set(NOT_FOR_HELP))


@pytest.mark.parametrize(
    "args", [("native", "status"), ("catalog", "models"), ("catalog", "accelerators")]
)
def test_small_verbs_import_nothing_heavy(args: tuple[str, ...], modules_loaded: Loaded) -> None:
    """The catalog and native verbs load no heavy library."""
    loaded = modules_loaded(*args)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_listing_keys_imports_nothing_heavy(
    tmp_path: Path, sincere: Sincere, modules_loaded: Loaded
) -> None:
    """`sincere keys list` on a store with a key loads no heavy library."""
    store = str(tmp_path / "keys.json")
    assert sincere(["keys", "create", "--name", "a", "--store", store]).returncode == 0
    loaded = modules_loaded("keys", "list", "--store", store)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_a_quiet_simulation_imports_no_terminal_ui(tmp_path: Path, modules_loaded: Loaded) -> None:
    """`sincere simulate --quiet` prints nothing, so it loads no rich (nor pandas, plots)."""
    config = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text(encoding="utf-8"))
    config["workload"]["num_requests"] = 10
    path = tmp_path / "w1-10.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = modules_loaded("simulate", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert "numpy" in loaded  # it did simulate
    assert loaded.isdisjoint({"rich", "pandas", "matplotlib", "scipy"}), sorted(loaded)


def test_every_registered_verb_is_in_the_verb_table() -> None:
    """A CLI module that registers a verb or a verb's subcommand has its row in VERBS."""
    from sincere.cli.app import VERBS

    for path, module in registered_commands().items():
        assert "?" not in path, f"{module} registers a command whose name is not a literal"
        assert path[0] in VERBS, f"{module} registers {path[0]!r}: add it to VERBS in app.py"
        assert module in VERBS[path[0]].modules, f"VERBS[{path[0]!r}] misses {module}"


def _walk(command: Any, path: tuple[str, ...]) -> set[tuple[str, ...]]:
    found = {path}
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found |= _walk(sub, (*path, name))
    return found


def test_every_verb_in_the_table_loads_and_the_command_list_is_complete() -> None:
    """Each row of VERBS names modules that register that verb; the commands read from the
    modules are exactly the app's commands, subcommands included."""
    from sincere.cli.app import VERBS, load_verb

    real: set[tuple[str, ...]] = set()
    for name in VERBS:
        command = load_verb(name)
        assert command.name == name
        real |= _walk(command, (name,))
    assert set(COMMANDS) == real
