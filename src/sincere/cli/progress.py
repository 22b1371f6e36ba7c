"""The progress bar long CLI jobs share: description, bar, done / total, elapsed time and
the time still to go (from the pace so far)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def count_bar(console: Console, *, transient: bool = True) -> Progress:
    """A bar counting items done, with an ETA; ``transient`` clears it when the job ends."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        "ETA",
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
