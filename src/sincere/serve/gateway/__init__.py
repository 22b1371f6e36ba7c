"""The OpenAI-compatible gateway (``sincere serve``); see :mod:`.server` for the endpoints.

Modules: :mod:`.config` (the YAML schema), :mod:`.server` (the HTTP server and its
handlers), :mod:`.requests` (a parsed request becomes a policy request), :mod:`.dispatch`
(the thin driver of the front-door policy: views, slots, the wait queue),
:mod:`.instances` (what the gateway knows of each instance), :mod:`.relay` (one request to
an instance, with retries), :mod:`.wait_queue`, :mod:`.breaker`, :mod:`.edge` (connection
limits), :mod:`.metrics`, :mod:`.observed_load` and the controller API
(:mod:`.controller`, :mod:`.controller_api`, :mod:`.controller_input`,
:mod:`.upstream_policy`). Import submodules directly.
"""
