"""What a training run measured, step by step, as plain JSON-ready data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["History"]


def _clean(v: Any) -> Any:
    # JSON has no NaN or inf: they become null, which is what "no value" means here.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


class History:
    """Per-step records, evaluations, events and a summary of one run of ``fit`` or ``fit_vi``.

    Attributes:
        kind: ``"ml"`` (maximum likelihood) or ``"vi"`` (variational inference).
        steps: per-step columns, e.g. ``{"step": [...], "loss": [...], "lr": [...]}``; ``fit_vi``
            adds ``elbo``, ``elbo_se``, ``beta`` and ``nonfinite`` (target values that were NaN
            or -inf at that step).
        evals: columns of the periodic evaluations (``step``, ``val_loss``).
        events: notable moments in order: ``{"step", "kind", "message"}`` with kinds
            ``rollback``, ``early_stop``, ``resumed``, ``restored_best``, ``constant_features``.
        summary: totals filled at the end (``final_loss``, ``best_val_loss``, ``rollbacks``,
            ``seconds``, ``steps_per_second``, ...).

    Examples:
        >>> h = History("ml"); h.log(step=1, loss=2.5); h.log(step=2, loss=float("nan"))
        >>> h["loss"], h.to_dict()["steps"]["loss"]
        ([2.5, nan], [2.5, None])
    """

    def __init__(self, kind: str) -> None:
        if kind not in ("ml", "vi"):
            raise ValueError(f"kind must be 'ml' or 'vi'; got {kind!r}")
        self.kind = kind
        self.steps: dict[str, list] = {}
        self.evals: dict[str, list] = {}
        self.events: list[dict] = []
        self.summary: dict[str, Any] = {}

    def log(self, **values: float) -> None:
        """Append one value to each named per-step column."""
        for key, value in values.items():
            self.steps.setdefault(key, []).append(float(value))

    def log_eval(self, **values: float) -> None:
        """Append one value to each named evaluation column."""
        for key, value in values.items():
            self.evals.setdefault(key, []).append(float(value))

    def event(self, step: int, kind: str, message: str) -> None:
        self.events.append({"step": int(step), "kind": kind, "message": message})

    def __getitem__(self, key: str) -> list:
        if key in self.steps:
            return self.steps[key]
        if key in self.evals:
            return self.evals[key]
        raise KeyError(
            f"no column {key!r}; per-step: {sorted(self.steps)}, evaluations: {sorted(self.evals)}"
        )

    def __len__(self) -> int:
        return len(self.steps.get("step", []))

    def __repr__(self) -> str:
        return f"History(kind={self.kind!r}, steps={len(self)}, summary={self.summary!r})"

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON data (NaN and inf become ``None``)."""
        return _clean(
            {
                "kind": self.kind,
                "steps": self.steps,
                "evals": self.evals,
                "events": self.events,
                "summary": self.summary,
            }
        )

    @classmethod
    def from_dict(cls, data: dict) -> History:
        h = cls(data["kind"])
        nan = float("nan")
        h.steps = {k: [nan if v is None else float(v) for v in col] for k, col in data["steps"].items()}
        h.evals = {k: [nan if v is None else float(v) for v in col] for k, col in data["evals"].items()}
        h.events = [dict(e) for e in data["events"]]
        h.summary = dict(data["summary"])
        return h

    def save(self, path: str | Path) -> Path:
        """Write the history as JSON to ``path``."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))
