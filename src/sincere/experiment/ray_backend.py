"""Run cells as Ray tasks: on a local Ray cluster started here, or on an existing one.

Ray is an optional extra (``pip install 'sincere[ray]'``). Each cell is one task of one
CPU running :func:`~sincere.experiment.runner.execute_cell`; results (the row and the
cell's files as bytes) come back to the driver, which writes them, so the cluster's
nodes need sincere installed but no shared file system. Only what this module started
is stopped: a local cluster it launched is shut down at the end; on an existing
cluster (``address``) the driver only disconnects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sincere.core.errors import ConfigError
from sincere.experiment.grid import Cell
from sincere.experiment.runner import CellResult, execute_cell, failed_result


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray, which is not installed",
            allowed="pip install 'sincere[ray]' (ray[default] >= 2.9)",
        ) from None
    return ray


def _connect(ray: Any, num_cpus: int, address: str | None) -> bool:
    """Start or join a cluster; True when this call started the connection."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, log_to_driver=False)
    return True


def run_on_ray(
    cells: list[Cell],
    sink: Callable[[Cell, CellResult], None],
    *,
    num_cpus: int,
    address: str | None = None,
) -> None:
    """Run ``cells`` as Ray tasks, passing each result to ``sink`` as it completes."""
    ray = _import_ray()
    started = _connect(ray, num_cpus, address)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(execute_cell)
        pending = {task.remote(cell): cell for cell in cells}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                result: CellResult = ray.get(ready[0])
            except Exception as exc:  # the task's worker died
                result = failed_result(cell, exc)
            sink(cell, result)
    finally:
        if started:
            ray.shutdown()
