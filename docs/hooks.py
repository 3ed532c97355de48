"""mkdocs hooks: pages generated from the code at build time, so they cannot drift from it.

- ``<!-- layer-catalogue -->`` becomes a table of every class in ``flowforge.transforms.__all__``:
  map (the docstring's summary), log-det, cheap direction, inverse method, cost (the docstring's
  ``Cost:`` paragraph) and paper (its ``References:`` section).
- ``<!-- cli-reference -->`` becomes one table of options per ``flowforge`` command, read from the
  typer application itself.
- ``<!-- error-table -->`` becomes a table of every subclass of ``flowforge.FlowforgeError`` that
  the public packages define, with its built-in base and the first line of its docstring.
- ``<!-- experiment-report: NAME -->`` becomes a link to ``experiments/NAME/report.md`` when that
  report is in the docs folder, a note that the command writes it otherwise, and says so when
  the experiment is not registered in ``flowforge.experiments.EXPERIMENTS``.
- ``<!-- page-link: PATH.md | TEXT -->`` becomes a link to the docs page ``PATH.md`` when it
  exists, and the plain TEXT otherwise (for pages written in parallel with these).
- Pages written alongside the tutorials (``distributed.md``, ``reliability.md``, the experiment
  reports under ``experiments/``) join the navigation when they exist (:func:`on_config`):
  ``--strict`` fails on a nav entry whose file is missing, and these files land independently.

A layer added to ``__all__`` without an entry in :data:`LOG_DET` fails the build (``--strict``
turns the hook's error into a failure), so the catalogue cannot silently lose a column.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from pathlib import Path

PLACEHOLDER = "<!-- layer-catalogue -->"
CLI_PLACEHOLDER = "<!-- cli-reference -->"
ERRORS_PLACEHOLDER = "<!-- error-table -->"
EXPERIMENT_LINK = re.compile(r"<!-- experiment-report: ([\w-]+) -->")
PAGE_LINK = re.compile(r"<!-- page-link: ([\w./-]+\.md) \| ([^>]*?) -->")

# Top-level pages added to the navigation (after "Troubleshooting") once their files exist.
OPTIONAL_PAGES = [("Distributed training", "distributed.md"), ("Reliability", "reliability.md")]

# The log-determinant of each layer's forward (generative) map, log|det dy/dx| per sample. Docstrings
# state it in many forms (or not at all), so it is written here once per layer; a missing entry is
# a build error (see layer_catalogue).
LOG_DET = {
    "ActNorm": "`H W sum s` (per-channel log-scales `s`, times the pixels)",
    "AdditiveCoupling": "0 (volume preserving)",
    "AffineCoupling": "`sum_T s(x_F, c)`",
    "Autoregressive": "`sum_i log f'(x_i; theta_i)` (triangular Jacobian)",
    "Compose": "the sum of the members' log-dets",
    "Coupling": "`sum_T log f'(x_T; g(x_F, c))`",
    "DenseLinear": "`log|det W|` (`slogdet`)",
    "Diagonal": "`sum s`",
    "Elementwise": "`sum_i log f'(x_i; theta_i)`",
    "Exp": "`sum x`",
    "Householder": "0 (orthogonal)",
    "Inverse": "minus the wrapped layer's log-det at the same pair",
    "InverseAutoregressive": "`sum s(x)` (affine default)",
    "Invertible1x1Conv": "`H W log|det W|`",
    "InvertibleResidual": "`log det(I + J_g)`: exact (small `d`) or an unbiased power-series estimate",
    "LULinear": "`sum log d`",
    "LeakyReLU": "`(number of negative entries) log a`",
    "LinearAffineCoupling": "`sum s` (`B = diag(exp(s))`)",
    "Logit": "`-sum log(x (1 - x))`",
    "MaskedAffineAutoregressive": "`-sum s(y)` (the density side reads `log|det dx/dy| = sum s`)",
    "MaskedSplineAutoregressive": "`sum_i log f'` of the spline, triangular Jacobian",
    "MultiScale": "the steps' plus the factor-out's",
    "Permutation": "0",
    "PiecewiseLinear": "`sum log(K h_b)` inside the interval, 0 outside",
    "PiecewiseQuadratic": "`sum log` of the bin's density (linear in the bin), 0 outside",
    "Planar": "`log(1 + h'(w^T z + b) w^T u_hat)`",
    "Radial": "`(d - 1) log(1 + beta h) + log(1 + beta alpha h^2)`, `h = 1/(alpha + r)`",
    "RationalQuadraticSpline": "`sum log` of the spline's derivative inside `[-bound, bound]`, 0 outside",
    "Sigmoid": "`sum log(y (1 - y))`",
    "Softplus": "`sum log sigmoid(x)`",
    "SplineCoupling": "`sum_T log` of the spline's derivative",
    "Split": 'the inner transform\'s plus `sum s(h)` (learned prior; 0 for `prior="base"`)',
    "Squeeze": "0 (a permutation of the entries)",
    "Standardize": "`sum log std`",
    "Sylvester": "`sum_i log(1 + h'_i R~_ii R_ii)`",
    "Tanh": "`sum log(1 - y^2)`",
    "Transform": "(abstract base class)",
    "TriangularLinear": "`sum log diag(W)`",
}

# Layers whose cheap direction and inverse depend on how they are built: said in words.
BY_ARGUMENTS = {
    "Autoregressive": ("`one_pass` chooses", "one MADE pass one way, `d` sequential steps the other"),
    "Compose": ("the members'", "the members' in reverse order"),
    "Inverse": ("the wrapped layer's, swapped", "the wrapped layer's forward"),
    "Transform": ("(set by subclasses)", "(set by subclasses)"),
}


# Cost of layers whose docstrings have no ``Cost:`` statement because it is another layer's.
COST = {"Inverse": "the wrapped layer's, directions swapped", "Transform": "(abstract base class)"}


def _section(doc: str, title: str) -> str:
    match = re.search(rf"^\s*{title}:\s*\n((?:\s{{4,}}.*\n?)+)", doc, flags=re.MULTILINE)
    if not match:
        return ""
    return " ".join(line.strip() for line in match.group(1).splitlines() if line.strip())


def _cost(doc: str) -> str:
    """The docstring's cost statement: from ``Cost`` to the end of its paragraph."""
    match = re.search(r"\bCost[:\s]+(.*?)(?:\n\s*\n|\Z)", doc, flags=re.DOTALL)
    return " ".join(match.group(1).split()) if match else ""


def _directions(cls: type) -> tuple[str, str]:
    """Cheap direction and inverse method; read from a small default instance where one can be built.

    Autoregressive layers set both per instance (MAF: inverse cheap, IAF: forward cheap), so the
    class attributes alone would say ``both`` for them.
    """
    name = cls.__name__
    if name in BY_ARGUMENTS:
        return BY_ARGUMENTS[name]
    obj = cls
    with contextlib.suppress(Exception):  # image layers and wrappers need other arguments
        obj = cls(2)
    inverse = getattr(obj, "inverse_method", "")
    if obj is not cls:  # the instance has d = 2 features: say d where its step count shows
        inverse = inverse.replace(": 2 steps", ": `d` steps")
    return getattr(obj, "cheap_direction", ""), inverse


def _cell(text: str) -> str:
    """One table cell: Sphinx roles (``:class:`~a.B` ``) become code spans, pipes are escaped."""
    text = re.sub(r":\w+:`~?([^`]*)`", lambda m: f"`{m.group(1).split('.')[-1]}`", text)
    return text.replace("|", "\\|").replace("\n", " ")


def layer_catalogue() -> str:
    from flowforge import transforms as T

    missing = [name for name in T.__all__ if name not in LOG_DET]
    if missing:
        raise ValueError(f"docs/hooks.py: LOG_DET has no entry for {missing}; add the layers' log-dets")
    rows = [
        "| layer | map (summary) | log-det (forward) | cheap direction | inverse | cost | reference |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in T.__all__:
        cls = getattr(T, name)
        doc = inspect.getdoc(cls) or ""
        summary = doc.split("\n\n")[0]
        refs = _section(doc, "References") or "—"
        cost = _cost(doc) or COST.get(name, "—")
        cheap, inverse = _directions(cls)
        cells = [f"`{name}`", summary, LOG_DET[name], cheap, inverse, cost, refs]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _option_row(param) -> str:
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    kind = "argument" if param.param_type_name == "argument" else "option"
    default = param.default
    if param.required:
        default_text = "required"
    elif default is None or callable(default):
        default_text = "—"
    else:
        default_text = f"`{default}`"
    help_text = getattr(param, "help", None) or ""
    return "| " + " | ".join(_cell(c) for c in [names, kind, default_text, help_text]) + " |"


def cli_reference() -> str:
    import typer.main

    from flowforge.cli import app

    group = typer.main.get_command(app)
    parts = []
    for name, command in group.commands.items():
        parts.append(f"## `flowforge {name}`\n")
        parts.append((command.help or "").strip() + "\n")
        params = [p for p in command.params if p.name != "help"]
        if params:
            parts.append("| name | kind | default | meaning |\n| --- | --- | --- | --- |")
            parts.extend(_option_row(p) for p in params)
            parts.append("")
    return "\n".join(parts)


def _public_name(cls: type) -> str:
    """The shortest public import path of ``cls``: the first package on its module's path exporting it."""
    parts = cls.__module__.split(".")
    for i in range(1, len(parts) + 1):
        package = ".".join(parts[:i])
        module = __import__(package, fromlist=["_"])
        if getattr(module, cls.__name__, None) is cls and not any(p.startswith("_") for p in parts[:i]):
            return f"{package}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def error_table() -> str:
    import flowforge
    import flowforge.datasets
    import flowforge.io
    import flowforge.train  # importing the packages defines the subclasses

    found: list[type] = []
    todo = [flowforge.FlowforgeError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(sorted(cls.__subclasses__(), key=lambda c: c.__name__))
    rows = ["| error | is also a | raised when |", "| --- | --- | --- |"]
    for cls in found:
        builtin = [b.__name__ for b in cls.__mro__[1:] if b.__module__ == "builtins" and b is not object]
        also = ", ".join(f"`{b}`" for b in builtin if b not in ("Exception", "BaseException")) or "—"
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0]
        rows.append("| " + " | ".join(_cell(c) for c in [f"`{_public_name(cls)}`", also, doc]) + " |")
    return "\n".join(rows)


def _nav_files(nav) -> set[str]:
    found: set[str] = set()
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found |= _nav_files(value)
        elif isinstance(value, str):
            found.add(value)
    return found


def experiment_reports(docs_dir: str | Path) -> list[str]:
    """Names of the experiments whose ``experiments/NAME/report.md`` is in the docs folder."""
    return sorted(p.parent.name for p in Path(docs_dir).glob("experiments/*/report.md"))


def _report_title(name: str) -> str:
    """The nav title of an experiment report: the command's name (reports' headings are long)."""
    return f"flowforge experiment {name}"


def on_config(config):
    nav = config.get("nav")
    if not nav:
        return config
    present = _nav_files(nav)
    docs = Path(config["docs_dir"])
    extra = [{t: p} for t, p in OPTIONAL_PAGES if (docs / p).is_file() and p not in present]
    if extra:
        keys = [next(iter(item)) if isinstance(item, dict) else item for item in nav]
        at = keys.index("Troubleshooting") + 1 if "Troubleshooting" in keys else len(nav)
        nav[at:at] = extra
    reports = [
        {_report_title(name): f"experiments/{name}/report.md"}
        for name in experiment_reports(docs)
        if f"experiments/{name}/report.md" not in present
    ]
    if reports:
        nav.append({"Experiments": reports})
    return config


def _experiment_link(match: re.Match, page, docs_dir: str) -> str:
    from flowforge.experiments import EXPERIMENTS

    name = match.group(1)
    if (Path(docs_dir) / "experiments" / name / "report.md").is_file():
        here = os.path.dirname(page.file.src_path)
        target = os.path.relpath(f"experiments/{name}/report.md", here or ".")
        return f"[the report of a full run]({Path(target).as_posix()})"
    if name not in EXPERIMENTS:
        return (
            "none yet; this version of flowforge does not have this experiment "
            "(`flowforge list experiments` names those it has)"
        )
    return f"not yet in these docs; the command writes it to `runs/experiment-{name}/report.md`"


def _page_link(match: re.Match, page, docs_dir: str) -> str:
    path, text = match.group(1), match.group(2).strip()
    if not (Path(docs_dir) / path).is_file():
        return text
    here = os.path.dirname(page.file.src_path)
    return f"[{text}]({Path(os.path.relpath(path, here or '.')).as_posix()})"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, layer_catalogue())
    if CLI_PLACEHOLDER in markdown:
        markdown = markdown.replace(CLI_PLACEHOLDER, cli_reference())
    if ERRORS_PLACEHOLDER in markdown:
        markdown = markdown.replace(ERRORS_PLACEHOLDER, error_table())
    markdown = PAGE_LINK.sub(lambda m: _page_link(m, page, config["docs_dir"]), markdown)
    return EXPERIMENT_LINK.sub(lambda m: _experiment_link(m, page, config["docs_dir"]), markdown)
