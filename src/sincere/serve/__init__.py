"""The live path: the OpenAI wire format, the emulated engines, the backends and the gateway.

* :mod:`sincere.serve.protocol` -- parses and builds OpenAI ``/v1/completions`` and
  ``/v1/chat/completions`` messages (shared by the gateway and the emulator);
* :mod:`sincere.serve.emulator` -- sincere's engine model on the wall clock behind a real
  HTTP server (``sincere emulate``);
* :mod:`sincere.serve.backends` -- clients of the serving instances (OpenAI-compatible
  servers, Ollama) and a scriptable upstream for tests;
* :mod:`sincere.serve.gateway` -- the OpenAI-compatible gateway (``sincere serve``), the
  data plane: the front door's policy objects in front of backends, with queueing,
  retries, a circuit breaker and metrics;
* :mod:`sincere.serve.control` -- the control plane: the controller and its ``/admin``
  API, acting on the gateway only through the ``Fleet`` face;
* :mod:`sincere.serve.app` -- the composition root of ``sincere serve``: the gateway with
  the controller mounted on it;
* :mod:`sincere.serve.security` -- API keys, limits, TLS and confidential mode's blocks.

Import submodules directly; these packages import nothing heavy on their own.
"""
