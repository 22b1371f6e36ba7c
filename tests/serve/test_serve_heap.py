"""A serving process takes its start-up heap out of the collector once it is bound, so a
full collection while it serves scans only what requests made (gc.freeze)."""

from __future__ import annotations

import subprocess
import sys

GATEWAY = """
import gc, os
from sincere.serve.app import serve_gateway
from sincere.serve.gateway.config import parse_config
raw = {"port": 0, "scrape": {"enabled": False},
       "backends": [{"name": "b", "url": "http://127.0.0.1:1", "models": ["m"],
                     "metrics_path": None}]}
def ready(gateway):
    print(gc.get_freeze_count(), flush=True)
    os._exit(0)
serve_gateway(parse_config(raw), ready=ready)
"""

EMULATOR = """
import gc
from sincere.cli.emulate import _announce
_announce([])
print(gc.get_freeze_count(), flush=True)
"""


def _frozen(code: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return int(done.stdout.split()[-1])


def test_a_bound_gateway_has_frozen_its_start_up_objects() -> None:
    """By the time the gateway says it is ready, the imports' and app's objects are frozen."""
    assert _frozen(GATEWAY) > 20_000


def test_announced_emulators_have_frozen_their_start_up_objects() -> None:
    """`sincere emulate` freezes once its engines are bound and announced."""
    assert _frozen(EMULATOR) > 20_000
