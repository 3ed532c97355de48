"""The documentation: the site builds with --strict and every Python block in it runs.

The blocks run through ``docs/gen_figures.py`` (the script that makes the committed figures),
so a page that links to a figure its own code does not write fails here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from ._site import mkdocs_build

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_spec = importlib.util.spec_from_file_location("docs_gen_figures", DOCS / "gen_figures.py")
gen_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_figures)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("page", gen_figures.pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_code_blocks_run(page: Path, tmp_path: Path, one_thread) -> None:
    """Blocks of a page run in order in one namespace, from a scratch directory, and write its figures."""
    missing = gen_figures.run_page(page, tmp_path)
    assert not missing, f"{page.name} links to figures its code did not write: {missing}"
    for rel in gen_figures.figures(page):
        assert (page.parent / rel).is_file(), f"{rel} is not committed next to {page.name}: make docs-figures"


def test_every_tutorial_figure_is_linked_and_generated() -> None:
    """No stale PNG: every committed figure under a figures/ folder is linked by the page beside it."""
    for folder in DOCS.rglob("figures"):
        if "experiments" in folder.relative_to(DOCS).parts:
            continue  # experiment reports ship their own figures
        linked = {rel for page in folder.parent.glob("*.md") for rel in gen_figures.figures(page)}
        for png in folder.glob("*.png"):
            assert f"figures/{png.name}" in linked, f"{png} is linked by no page: delete it"


def test_catalogue_lists_every_layer_with_every_column() -> None:
    from flowforge import transforms as T

    hooks = _hooks()
    table = hooks.layer_catalogue().splitlines()
    rows = {line.split("|")[1].strip().strip("`"): line for line in table[2:]}
    assert set(rows) == set(T.__all__)
    for name, line in rows.items():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 7 and all(cells), f"{name}: an empty catalogue cell in {cells}"
    # Autoregressive layers set their cheap direction per instance: the table must say which.
    assert "| inverse |" in rows["MaskedAffineAutoregressive"]
    assert "| forward |" in rows["InverseAutoregressive"]


def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    proc = mkdocs_build(tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    assert (site / "catalogue" / "index.html").exists()
    # Every page of the docs folder (outside the experiments' own reports) is in the navigation.
    nav = (site / "index.html").read_text()
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS)
        if rel.parts[0] == "experiments" or rel.name == "index.md":
            continue
        url = rel.with_suffix("").as_posix()
        linked = f'href="{url}/' in nav or f'href="./{url}/' in nav
        assert linked, f"{rel} is not in the navigation: add it to nav in mkdocs.yml"


def _hooks():
    sys.path.insert(0, str(DOCS))
    try:
        import hooks
    finally:
        sys.path.remove(str(DOCS))
    return hooks


def test_optional_pages_join_the_nav_only_when_they_exist(tmp_path: Path) -> None:
    hooks = _hooks()
    nav = [{"Home": "index.md"}, {"Troubleshooting": "troubleshooting.md"}, {"API": [{"x": "api/x.md"}]}]
    config = hooks.on_config({"nav": [dict(i) for i in nav], "docs_dir": str(tmp_path)})
    assert config["nav"] == nav  # nothing exists yet: nothing added
    (tmp_path / "reliability.md").write_text("# R\n")
    (tmp_path / "experiments" / "padding").mkdir(parents=True)
    (tmp_path / "experiments" / "padding" / "report.md").write_text("# P\n")
    config = hooks.on_config({"nav": [dict(i) for i in nav], "docs_dir": str(tmp_path)})
    assert config["nav"][2] == {"Reliability": "reliability.md"}  # right after Troubleshooting
    assert config["nav"][-1] == {
        "Experiments": [{"flowforge experiment padding": "experiments/padding/report.md"}]
    }


def test_experiment_links_follow_the_reports(tmp_path: Path) -> None:
    from types import SimpleNamespace

    hooks = _hooks()
    page = SimpleNamespace(file=SimpleNamespace(src_path="tutorials/seeds.md"))
    text = "A <!-- experiment-report: padding -->. B <!-- experiment-report: no-such-thing -->."
    before = hooks.on_page_markdown(text, page, {"docs_dir": str(tmp_path)}, None)
    assert "runs/experiment-padding/report.md" in before and "does not have this experiment" in before
    (tmp_path / "experiments" / "padding").mkdir(parents=True)
    (tmp_path / "experiments" / "padding" / "report.md").write_text("# P\n")
    after = hooks.on_page_markdown(text, page, {"docs_dir": str(tmp_path)}, None)
    assert "](../experiments/padding/report.md)" in after


def test_page_links_appear_when_the_page_does(tmp_path: Path) -> None:
    from types import SimpleNamespace

    hooks = _hooks()
    page = SimpleNamespace(file=SimpleNamespace(src_path="tutorials/multi-process.md"))
    text = "See <!-- page-link: distributed.md | the guide -->."
    assert hooks.on_page_markdown(text, page, {"docs_dir": str(tmp_path)}, None) == "See the guide."
    (tmp_path / "distributed.md").write_text("# D\n")
    linked = hooks.on_page_markdown(text, page, {"docs_dir": str(tmp_path)}, None)
    assert linked == "See [the guide](../distributed.md)."


def test_docstring_examples_are_an_examples_section() -> None:
    # griffe (mkdocstrings) reads "Examples:" as code; a singular "Example:" becomes an admonition
    # of plain Markdown, where `x[0][1]` is a broken link and the doctest loses its formatting.
    singular = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip() == "Example:"
    ]
    assert not singular, f"write 'Examples:' in {singular}"
