"""`sincere emulate`'s flags: --ep reaches the engine's deployment, a bad --role names the choices.

The servers are not started: ``serve_forever`` is replaced by a recorder of the configs
it would serve.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from sincere.cli.app import app, load_verb
from sincere.core.errors import ConfigError
from sincere.serve.emulator import server

runner = CliRunner()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The configs `sincere emulate` hands to ``serve_forever``."""
    seen: list[Any] = []

    async def record(configs: list[Any], **_: Any) -> None:
        seen.extend(configs)

    monkeypatch.setattr(server, "serve_forever", record)
    load_verb("emulate")
    return seen


def test_ep_flag_sets_the_expert_parallel_degree(served: list[Any]) -> None:
    """--ep 4 with --tp 4 on a mixture-of-experts model gives every replica ep 4."""
    args = ["emulate", "--model", "qwen3-30b-a3b", "--tp", "4", "--ep", "4", "--count", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [(c.tp, c.ep) for c in served] == [(4, 4), (4, 4)]


def test_a_misspelt_role_lists_the_roles_with_a_suggestion(served: list[Any]) -> None:
    """--role prefil: the error suggests prefill, lists every role, names no internal class."""
    result = runner.invoke(app, ["emulate", "--role", "prefil"])
    assert isinstance(result.exception, ConfigError)
    text = str(result.exception)
    assert "did you mean 'prefill'?" in text and "allowed: prefill, decode, both" in text
    assert "EmulatorConfig" not in text and served == []
