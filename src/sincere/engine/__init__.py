"""One inference engine's state machine: batches, KV cache, model residency."""

from sincere.engine.base import Engine, EngineLoad

__all__ = ["Engine", "EngineLoad"]
