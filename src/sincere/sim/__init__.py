"""The discrete-event simulator: ``simulate(config) -> SimulationResult``.

See docs/simulator.md. Layers: :mod:`.events` (the generic event queue),
:mod:`.runner` (the loop), :mod:`.cluster` (router + engines), :mod:`.config`
(the YAML schema), :mod:`.build` (config to cluster), :mod:`.metrics` (summary).
"""

from sincere.sim.api import SimulationResult, SimulationWarning, simulate
from sincere.sim.config import SimulationConfig, load_config

__all__ = ["SimulationConfig", "SimulationResult", "SimulationWarning", "load_config", "simulate"]
