"""The training progress bar (rich): step, free-form metrics and steps/s; silent when disabled."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A rich progress bar showing the step, free-form metrics and steps/s; silent if disabled."""

    def __init__(self, enabled: bool, total: int, start: int, title: str) -> None:
        self.enabled = enabled
        self.total, self.start, self.title = total, start, title
        self._bar = None
        self._task = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.title, total=self.total, completed=self.start, info="", rate=""
            )
        return self

    def update(self, step: int, info: str) -> None:
        if self._bar is None:
            return
        done = step - self.start
        rate = done / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, completed=step, info=info, rate=f"{rate:.1f} steps/s")

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
