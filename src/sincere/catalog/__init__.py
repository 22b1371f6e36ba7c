"""Facts: accelerators and model architectures, with public sources."""

from sincere.catalog.specs import PRECISION_BYTES, Accelerator, ModelArch

__all__ = ["PRECISION_BYTES", "Accelerator", "ModelArch"]
