"""The OpenAI-compatible gateway (``sincere serve``); see :mod:`.server` for the endpoints.

Modules: :mod:`.config` (the YAML schema), :mod:`.server` (the HTTP server and its
handlers), :mod:`.requests` (a parsed request becomes a policy request), :mod:`.dispatch`
(the thin driver of the front-door policy: views, slots, the wait queue),
:mod:`.instances` (what the gateway knows of each instance), :mod:`.guard` (the request
path's admit and settle steps: keys, limits, budget reservation, admission, spend),
:mod:`.relay` (one request to an instance, with retries), :mod:`.wait_queue`,
:mod:`.breaker`, :mod:`.edge` (connection limits), :mod:`.metrics` and
:mod:`.observed_load`. This is the data plane: the control plane (the controller and its
``/admin`` API) is :mod:`sincere.serve.control`, which sees the gateway only through its
``Fleet`` face; :mod:`sincere.serve.app` joins the two. Import submodules directly.
"""
