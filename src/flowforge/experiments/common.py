"""Shared output plumbing for experiments: results.json, report.md, figures."""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Report", "markdown_table"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return _jsonable(v.item())
    if hasattr(v, "tolist"):
        return _jsonable(v.tolist())
    return v


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "{:.4g}") -> str:
    """A GitHub-flavoured markdown table; floats formatted with ``fmt``."""

    def cell(v: Any) -> str:
        return fmt.format(v) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """Collects an experiment's outputs and writes them to ``out``.

    Examples:
        >>> import tempfile
        >>> r = Report("demo", seed_text="000", claim="a claim", out=tempfile.mkdtemp(), quick=True, seed=0)
        >>> r.section("Results", "numbers"); r.verdict(True, "they agree"); path = r.write({"x": 1.0})
        >>> path.name
        'report.md'
    """

    def __init__(
        self, name: str, *, seed_text: str, claim: str, out: str | Path, quick: bool, seed: int
    ) -> None:
        self.name, self.seed_text, self.claim = name, seed_text, claim
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.quick, self.seed = quick, seed
        self.sections: list[tuple[str, str]] = []
        self.figures: list[tuple[str, str]] = []
        self.verdicts: list[tuple[bool | None, str]] = []
        self.started = time.time()

    def section(self, title: str, body: str) -> None:
        self.sections.append((title, body))

    def figure(self, fig: Any, filename: str, caption: str) -> Path:
        """Save a matplotlib figure as PNG in ``out`` and list it in the report."""
        path = self.out / filename
        fig.savefig(path, dpi=110, bbox_inches="tight")
        self.figures.append((filename, caption))
        return path

    def verdict(self, agrees: bool | None, text: str) -> None:
        """Record whether our measurement agrees with the seed's claim (None: inconclusive)."""
        self.verdicts.append((agrees, text))

    def write(self, results: dict) -> Path:
        elapsed = time.time() - self.started
        command = f"flowforge experiment {self.name}{' --quick' if self.quick else ''} --seed {self.seed}"
        meta = {
            "experiment": self.name,
            "seed_text": self.seed_text,
            "quick": self.quick,
            "seed": self.seed,
            "command": command,
            "seconds": round(elapsed, 1),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "verdicts": [{"agrees": a, "text": t} for a, t in self.verdicts],
        }
        with open(self.out / "results.json", "w") as f:
            json.dump(_jsonable({"meta": meta, "results": results}), f, indent=2)
        # The command comes first: a reader of a committed report must see how to re-make it.
        lines = [f"# Experiment `{self.name}`", "", f"Made by `{command} --out {self.out}`.", ""]
        lines += [f"Seed text: `{self.seed_text}`.", ""]
        lines += ["## The seed's claim", "", self.claim, ""]
        lines += ["## Verdict", ""]
        for agrees, text in self.verdicts:
            mark = {True: "agrees", False: "disagrees", None: "inconclusive"}[agrees]
            lines.append(f"- **{mark}**: {text}")
        lines.append("")
        for title, body in self.sections:
            lines += [f"## {title}", "", body, ""]
        for filename, caption in self.figures:
            lines += [f"![{caption}]({filename})", "", f"*{caption}*", ""]
        lines += ["## How this was made", "", f"`{command}` ({elapsed:.0f} s).", ""]
        path = self.out / "report.md"
        path.write_text("\n".join(lines))
        return path
