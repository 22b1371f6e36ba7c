"""sincere: SLO-aware scheduling for LLM inference, from plan to production.

The same clock-free policy objects and the same engine model run in a fast
discrete-event simulator and, live, in an OpenAI-compatible gateway. See
``docs/architecture.md`` for the layers.
"""

__version__ = "0.1.0"

from sincere import native as _native

_native.install()  # compiled hot modules, when built and current (see sincere.native)
