"""Progress feedback for long CLI work: a rich progress bar on stderr (silent when not a TTY)."""
from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def task_progress(label: str, total: int | None):
    """Yields `step(description)`; advances one unit per call."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    console = Console(file=sys.stderr)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as prog:
        task = prog.add_task(label, total=total)

        def step(desc: str = "") -> None:
            prog.update(task, advance=1, description=f"{label}: {desc}" if desc else label)

        yield step
