"""Profile real engines: HTTP concurrency sweeps, local PyTorch models, a host/GPU monitor.

Outputs are CSVs in the published layouts (data/sincere, data/maveriq) so that
:mod:`sincere.fit` and :mod:`sincere.estimate` read ours and theirs alike. torch and
transformers (the ``ml`` extra) are imported only by :mod:`sincere.profile.local`, when
it runs.
"""

from sincere.profile.csvio import read_profile_csv, write_profile_csv
from sincere.profile.http import (
    LEADING_COLUMNS,
    HttpProfileConfig,
    HttpProfiler,
    RequestTiming,
    profile_http,
)
from sincere.profile.monitor import Monitor, host_sample
from sincere.profile.sizes import batch_size_ladder
from sincere.profile.vllm_server import VllmServer, free_port

__all__ = [
    "LEADING_COLUMNS",
    "HttpProfileConfig",
    "HttpProfiler",
    "Monitor",
    "RequestTiming",
    "VllmServer",
    "batch_size_ladder",
    "free_port",
    "host_sample",
    "profile_http",
    "read_profile_csv",
    "write_profile_csv",
]
