"""The live path: the OpenAI wire format, the emulated engine server and the gateway.

:mod:`sincere.serve.protocol` parses and builds OpenAI ``/v1/completions`` and
``/v1/chat/completions`` messages (shared by the gateway and the emulator);
:mod:`sincere.serve.emulator` runs sincere's engine model on the wall clock behind a
real HTTP server (``sincere emulate``). Import submodules directly; this package
imports nothing heavy on its own.
"""
