"""The parameter tables of the policy docs, generated from the parameter models.

Each table lists every registered entry of a registry with each parameter's allowed
values, default and meaning, read from its :class:`~sincere.core.params.Params` model,
and the collaborators it is handed. In the docs a table sits between
``<!-- params:KEY -->`` and ``<!-- /params:KEY -->``; ``python -m
sincere.policy.params_docs`` rewrites them all, and a test checks that the docs hold
exactly what this module generates, so docs and code cannot drift.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sincere.core.params import param_rows
from sincere.core.registry import Registry
from sincere.perf.factory import STEP_MODELS
from sincere.policy.batching.base import STRATEGIES, StrategyParams
from sincere.policy.batching.composed import ComposedParams
from sincere.policy.specs import REGISTRIES


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(allowed: str, default: str, meaning: str) -> str:
    """The allowed, default and meaning cells (a literal default as code; ``required`` and a
    default said in words, "the accelerator's fit", as text)."""
    literal = default != "required" and not default.startswith("the ")
    shown = f"`{_cell(default)}`" if literal else default
    return f"{_cell(allowed)} | {shown} | {_cell(meaning)}"


def _header(entry: str) -> list[str]:
    return [
        f"| {entry} | parameter | allowed | default | meaning |",
        "|---|---|---|---|---|",
    ]


def registry_table(registry: Registry[Any], entry: str) -> str:
    """Markdown table of every shipped entry of ``registry``: parameters, then collaborators.

    Entries registered from outside the package (a user's plugin) are not sincere's to
    document and are left out.
    """
    shared = {n.name for n in registry.needs_all}
    lines = _header(entry)
    for name in registry.names():
        if not getattr(registry.get(name), "__module__", "sincere.").startswith("sincere."):
            continue
        rows = registry.param_rows(name)
        for param, allowed, default, meaning in rows:
            lines.append(f"| `{name}` | `{param}` | {_row(allowed, default, meaning)} |")
        for need in registry.needs(name):
            if need.name in shared:
                continue
            how = "from the parameters" if need.default else "optional" if need.optional else ""
            lines.append(
                f"| `{name}` | `{need.name}` (handed in) | {_cell(need.what)} | "
                f"{how or 'required'} | collaborator |"
            )
        if not rows and all(n.name in shared for n in registry.needs(name)):
            lines.append(f"| `{name}` | — | | | no parameters |")
    if registry.needs_all:
        handed = ", ".join(f"`{n.name}` ({n.what})" for n in registry.needs_all)
        lines += ["", f"Every {registry.kind} is also handed {handed}."]
    return "\n".join(lines)


def strategy_table() -> str:
    """The batching rules' table, then what every strategy name takes besides."""
    lines = [registry_table(STRATEGIES, "rule"), ""]
    own = set(ComposedParams.model_fields) - set(StrategyParams.model_fields)
    lines += _header("strategy")
    for param, allowed, default, meaning in param_rows(ComposedParams):
        if param not in own:
            continue
        lines.append(f"| any | `{param}` | {_row(allowed, default, meaning)} |")
    return "\n".join(lines)


TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "routers": ("docs/routers.md", lambda: registry_table(REGISTRIES["router"], "router")),
    "length-predictors": (
        "docs/routers.md",
        lambda: registry_table(REGISTRIES["length-predictor"], "predictor"),
    ),
    "latency-predictors": (
        "docs/routers.md",
        lambda: registry_table(REGISTRIES["latency-predictor"], "predictor"),
    ),
    "schedulers": (
        "docs/simulator.md",
        lambda: registry_table(REGISTRIES["scheduler"], "scheduler"),
    ),
    "strategies": ("docs/strategies.md", strategy_table),
    "step-models": ("docs/perf.md", lambda: registry_table(STEP_MODELS, "kind")),
}
"""Table key -> (docs file, what generates it)."""


def _block(key: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- params:{re.escape(key)} -->\n)(.*?)(<!-- /params:{re.escape(key)} -->)", re.S
    )


def documented(text: str, key: str) -> str | None:
    """The table between ``key``'s markers in ``text`` (``None`` without the markers)."""
    found = _block(key).search(text)
    return None if found is None else found.group(2).rstrip("\n")


def with_table(text: str, key: str, table: str) -> str:
    """``text`` with ``table`` between ``key``'s markers."""
    return _block(key).sub(lambda m: m.group(1) + table + "\n" + m.group(3), text)


def rewrite(root: Path) -> list[Path]:
    """Regenerate every table in the docs under ``root``; the files that changed."""
    changed: list[Path] = []
    for key, (name, make) in TABLES.items():
        path = root / name
        text = path.read_text(encoding="utf-8")
        if documented(text, key) is None:
            raise SystemExit(f"{path}: no <!-- params:{key} --> ... <!-- /params:{key} --> block")
        new = with_table(text, key, make())
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += [] if path in changed else [path]
    return changed


if __name__ == "__main__":
    for path in rewrite(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()):
        print(f"rewrote {path}")
