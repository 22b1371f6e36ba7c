"""The progress bar long CLI jobs share: description, bar, done / total, elapsed time and
the time still to go (from the pace so far)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

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


class CountUpdate(Protocol):
    """Moves a counting bar to ``done`` of ``total``, renaming it when given a description."""

    def __call__(self, done: int, total: int, description: str | None = None) -> None: ...


@contextmanager
def counting(console: Console, label: str, *, transient: bool = True) -> Iterator[CountUpdate]:
    """A :func:`count_bar` with one task, ``label``, while the block runs; yields the update
    a job reports its progress through."""
    with count_bar(console, transient=transient) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int, description: str | None = None) -> None:
            bar.update(task, completed=done, total=total, description=description)

        yield update
