"""Emulated inference engines (``sincere emulate``): real HTTP servers, no GPU.

Modules: :mod:`.config` (one engine's YAML schema: a deployment spec plus where it
listens and what it injects), :mod:`.live` (the continuous engine on the wall clock),
:mod:`.server` (the OpenAI-compatible HTTP server around it), :mod:`.metrics` (its
Prometheus metrics under vLLM's names) and :mod:`.sleep` (vLLM's sleep mode). Import
submodules directly.
"""
