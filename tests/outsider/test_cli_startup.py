"""The command starts fast: ``--help`` and a verb import only what they need.

Timings are in ``benchmarks/cli_startup.py``; these tests pin the structure that makes
them (see the top of ``sincere/cli/app.py``), so they fail on an eager import, not on a
slow machine.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

import sincere.cli

CLI_DIR = Path(sincere.cli.__file__).parent
HEAVY = ("numpy", "scipy", "pyarrow", "matplotlib", "torch", "aiohttp", "pandas", "ray")
"""Modules that cost tens to hundreds of milliseconds to import."""

Loaded = Callable[..., set[str]]


@pytest.mark.parametrize("args", [("--help",), ("--version",), ()])
def test_root_help_and_version_import_nothing_heavy(
    args: tuple[str, ...], modules_loaded: Loaded
) -> None:
    """`sincere`, `sincere --help` and `--version` load no heavy library."""
    loaded = modules_loaded(*args)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--help"),
        ("bench", "--help"),
        ("trace", "stats", "--help"),
        ("trace", "convert", "--help"),
        ("experiment", "--help"),
        ("capacity", "--help"),
        ("report", "--help"),
        ("profile", "http", "--help"),
        ("native", "status"),
        ("catalog", "models"),
    ],
)
def test_verb_help_and_small_verbs_import_nothing_heavy(
    args: tuple[str, ...], modules_loaded: Loaded
) -> None:
    """A verb's --help (and the catalog and native verbs) load no heavy library."""
    loaded = modules_loaded(*args)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def _registered_verbs(path: Path) -> set[str]:
    """Names a CLI module registers on the root app (``app.command`` / ``app.add_typer``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id == "app"):
            continue
        if node.func.attr == "command" and node.args:
            first = node.args[0]
            names.add(first.value if isinstance(first, ast.Constant) else "?")
        if node.func.attr == "add_typer":
            names |= {
                k.value.value
                for k in node.keywords
                if k.arg == "name" and isinstance(k.value, ast.Constant)
            }
    return {n for n in names if isinstance(n, str)}


def test_every_registered_verb_is_in_the_verb_table() -> None:
    """A CLI module that registers a verb has its row in VERBS (else it would be unreachable)."""
    from sincere.cli.app import VERBS

    for path in sorted(CLI_DIR.glob("*.py")):
        module = f"sincere.cli.{path.stem}"
        for name in _registered_verbs(path):
            assert name in VERBS, f"{path.name} registers {name!r}: add it to VERBS in app.py"
            assert module in VERBS[name].modules, f"VERBS[{name!r}] misses {module}"


def test_every_verb_in_the_table_loads() -> None:
    """Each row of VERBS names modules that register that verb."""
    from sincere.cli.app import VERBS, load_verb

    for name in VERBS:
        command = load_verb(name)
        assert command.name == name
