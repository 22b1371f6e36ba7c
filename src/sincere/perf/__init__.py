"""Performance models: step time, model swaps and memory."""

from sincere.perf.base import Batch, Deployment, StepTimeBase, StepTimeModel, SwapTime

__all__ = ["Batch", "Deployment", "StepTimeBase", "StepTimeModel", "SwapTime"]
