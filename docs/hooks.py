"""mkdocs hooks: pages generated from the code at build time, so they cannot drift from it."""

from __future__ import annotations

import inspect
import re

PLACEHOLDER = "<!-- layer-catalogue -->"


def _section(doc: str, title: str) -> str:
    match = re.search(rf"^\s*{title}:\s*\n((?:\s{{4,}}.*\n?)+)", doc, flags=re.MULTILINE)
    if not match:
        return ""
    return " ".join(line.strip() for line in match.group(1).splitlines() if line.strip())


def _cost(doc: str) -> str:
    match = re.search(r"Cost[:\s]+([^\n]*(?:\n(?!\s*\n)[^\n]*)?)", doc)
    return " ".join(match.group(1).split()) if match else ""


def layer_catalogue() -> str:
    from flowforge import transforms as T

    rows = [
        "| layer | map (summary) | cheap direction | inverse | cost | reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in T.__all__:
        cls = getattr(T, name)
        doc = inspect.getdoc(cls) or ""
        summary = doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        refs = _section(doc, "References").replace("|", "\\|")
        cost = _cost(doc).replace("|", "\\|")
        inverse = getattr(cls, "inverse_method", "")
        cheap = getattr(cls, "cheap_direction", "")
        rows.append(f"| `{name}` | {summary} | {cheap} | {inverse} | {cost} | {refs} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, layer_catalogue())
    return markdown
