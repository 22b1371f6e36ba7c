"""The ``sincere`` command: one verb per job (see ``sincere --help``)."""

import os

# NumPy's OpenBLAS starts a worker thread per core when it loads, and each spins about a
# tenth of a second of CPU waiting for work before it sleeps: most of a short command's
# spare CPU. The command's linear algebra is small (fits of a few constants over some
# thousand rows), so it runs on the calling thread unless the environment says otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sincere.cli.app import app, main

__all__ = ["app", "main"]
