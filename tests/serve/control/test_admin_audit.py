"""Admin changes leave an audit line whatever their outcome, and none runs unaudited."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.serve.security.test_gateway import bearer, make_keys, serving

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.security.keys import KeySpec


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 30))


def audit_lines(keys: Path) -> list[dict[str, object]]:
    text = keys.with_name(keys.name + ".audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_a_failed_admin_change_is_audited_with_its_status(tmp_path: Path) -> None:
    """Removing an instance that does not exist (404) still leaves an audit line saying so."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, ops=KeySpec(kind="admin", name="ops"))

    async def main() -> None:
        async with serving(keys, FakeUpstream()) as (_up, gw, s):
            url = gw.url + "/admin/instances/ghost"
            async with s.delete(url, headers=bearer(tokens["ops"])) as r:
                assert r.status == 404

    run(main)
    failed = [a for a in audit_lines(keys) if a["target"] == "ghost"]
    assert len(failed) == 1 and failed[0]["details"]["status"] == 404  # type: ignore[index]


def test_no_admin_change_runs_when_the_audit_log_cannot_be_written(tmp_path: Path) -> None:
    """With the audit file gone unwritable, a model registration is refused (503), not made."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, ops=KeySpec(kind="admin", name="ops"))
    audit = keys.with_name(keys.name + ".audit.jsonl")

    async def main() -> None:
        async with serving(keys, FakeUpstream()) as (_up, gw, s):
            audit.unlink()
            audit.mkdir()  # appending to it now fails, even for root
            url = gw.url + "/admin/models"
            async with s.post(url, json={"name": "extra"}, headers=bearer(tokens["ops"])) as r:
                status, answer = r.status, await r.json()
            async with s.get(url, headers=bearer(tokens["ops"])) as r:
                names = [m["name"] for m in (await r.json())["models"]]
        assert status == 503 and answer["error"]["code"] == "audit_unavailable"
        assert "extra" not in names

    run(main)
