"""The control plane: what runs the fleet, beside the gateway (the data plane) that serves it.

Modules: :mod:`.fleet` (the :class:`~sincere.serve.control.fleet.Fleet` face: the only way
the control plane acts on the data plane), :mod:`.controller` (register models, deploy and
remove instances, plan and apply), :mod:`.autoscaler` (the simulator's autoscaling run
live; its books :mod:`.scale_book`, its one bridge to the simulator :mod:`.sim_scaling`),
:mod:`.api` (its ``/admin`` routes), :mod:`.inputs` (what the API accepts from a remote
caller), :mod:`.upstream_policy` (which servers it may put behind the gateway) and
:mod:`.config` (the ``planning`` and ``controller`` sections of the gateway's config
file). Nothing here imports :mod:`sincere.serve.gateway`; the gateway imports only
:mod:`.config` (its file's schema). :mod:`sincere.serve.app` joins the planes. The
scaling decision itself is :mod:`sincere.optimize.scaling` (no clock, no I/O).
Import submodules directly.
"""
