"""Clients of the serving instances behind the gateway, and a scriptable upstream for tests.

Modules: :mod:`.config` (one backend's settings), :mod:`.openai_api` (OpenAI-compatible
servers: vLLM, SGLang, TGI, llama.cpp, ``sincere emulate``; :func:`~.openai_api.make_backend`),
:mod:`.ollama_api` (Ollama's native API) and :mod:`.fake_upstream` (a scriptable server
for tests and the overhead benchmark). Import submodules directly.
"""
