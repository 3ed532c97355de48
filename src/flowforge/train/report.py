"""Run reports: ``report.md`` (figures linked), ``report.html`` (figures embedded) and strict JSON files."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .history import _clean

__all__ = ["write_json", "write_report"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if v is None:
        return "n/a"
    return str(v)


def write_report(
    out: str | Path,
    *,
    title: str,
    summary: str,
    metrics: dict[str, Any],
    figures: Sequence[tuple[str, str]] = (),
    sections: Sequence[tuple[str, str]] = (),
    command: str | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` into ``out``.

    Args:
        out: the run folder; figure paths are relative to it.
        title: the report's heading.
        summary: one paragraph saying what was done and what came out.
        metrics: name -> value, shown as a table.
        figures: ``(relative PNG path, caption)`` pairs.
        sections: ``(heading, preformatted text)`` pairs added after the metrics.
        command: the command that reproduces the run.

    Returns:
        The paths of the markdown and HTML reports.

    Examples:
        >>> import tempfile
        >>> md, page = write_report(tempfile.mkdtemp(), title="t", summary="s", metrics={"nll": 1.23456})
        >>> "| nll | 1.235 |" in md.read_text(), page.suffix
        (True, '.html')
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [(k, _fmt(v)) for k, v in metrics.items()]
    md = [f"# {title}", "", summary, "", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    md += [f"| {k} | {v} |" for k, v in rows]
    md.append("")
    for heading, body in sections:
        md += [f"## {heading}", "", "```", body, "```", ""]
    if figures:
        md += ["## Figures", ""]
        for path, caption in figures:
            md += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    if command:
        md += ["## Reproduce", "", "```bash", command, "```", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))

    e = html.escape
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "img{max-width:100%;border:1px solid #eee}"
        "figcaption{color:#555;font-style:italic;margin-bottom:1.5em}"
        "pre{background:#f6f6f6;padding:0.6em}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{e(summary)}</p>",
        "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>",
        *(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in rows),
        "</table>",
    ]
    for heading, body in sections:
        page.append(f"<h2>{e(heading)}</h2><pre>{e(body)}</pre>")
    if figures:
        page.append("<h2>Figures</h2>")
        for path, caption in figures:
            data = base64.b64encode((out / path).read_bytes()).decode()
            page.append(
                f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
    if command:
        page.append(f"<h2>Reproduce</h2><pre>{e(command)}</pre>")
    page.append("</body></html>")
    html_path = out / "report.html"
    html_path.write_text("\n".join(page))
    return md_path, html_path


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON: NaN and infinities (a k-hat of -inf when q equals p) become null."""
    path.write_text(json.dumps(_clean(data), indent=1, default=lambda v: None, allow_nan=False))
