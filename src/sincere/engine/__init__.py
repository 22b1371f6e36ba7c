"""One inference engine's state machine: batches, KV cache, model residency."""

from sincere.engine.base import Engine, EngineLoad, EngineStats

__all__ = ["Engine", "EngineLoad", "EngineStats"]
