"""The progress bar long CLI jobs share: description, bar, done / total, elapsed time."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn


def count_bar(console: Console, *, transient: bool = True) -> Progress:
    """A bar counting items done; ``transient`` clears it when the job ends."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )
