"""Regenerate the tutorials' figures by running the tutorials (``make docs-figures``).

Design: a tutorial's figures are written by the tutorial's own code. Its ```python blocks
save each figure under a relative ``figures/`` folder (``plots.save_figure(fig,
"figures/name.png")``), and the page shows it with ``![caption](figures/name.png)``, a path
relative to the page. This script runs every page's blocks, in order and in one namespace,
from a scratch directory (so data files and run folders the code writes go nowhere), then
copies each ``figures/*.png`` the page links to from the scratch directory to the same path
next to the page, where mkdocs picks it up. The PNGs are committed, so building the site
needs no training. ``tests/test_docs.py`` runs the blocks through :func:`run_page` too and
fails if a page links to a figure its code did not write, so a committed figure cannot
outlive the code that made it.

Usage: ``python docs/gen_figures.py [docs/page.md ...]`` (default: every page with blocks).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
FIGURE = re.compile(r"!\[[^\]]*\]\((figures/[^)\s]+\.png)\)")


def pages() -> list[Path]:
    """Every docs page with at least one ```python block (the experiments' reports are not tutorials)."""
    return sorted(
        p
        for p in DOCS.rglob("*.md")
        if "experiments" not in p.relative_to(DOCS).parts and BLOCK.search(p.read_text())
    )


def figures(page: Path) -> list[str]:
    """The generated figures a page links to, as paths relative to the page."""
    return sorted(set(FIGURE.findall(page.read_text())))


def run_page(page: Path, workdir: Path) -> list[str]:
    """Run the page's blocks in order, in one namespace, from ``workdir``.

    Returns the linked figures the run did *not* write (empty when all were written).
    """
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__docs__"}
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            exec(compile(match.group(1), f"{page.name}[block {i}]", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return [f for f in figures(page) if not (workdir / f).is_file()]


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    targets = [Path(a).resolve() for a in argv] or pages()
    status = 0
    for page in targets:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            missing = run_page(page, Path(tmp))
            for rel in figures(page):
                if rel in missing:
                    continue
                dest = page.parent / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / rel, dest)
        took = time.perf_counter() - start
        print(f"{page.relative_to(DOCS)}: {len(figures(page)) - len(missing)} figure(s), {took:.0f} s")
        if missing:
            print(f"  linked but not written by the page's code: {missing}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
