"""mkdocs hooks: pages generated from the code at build time, so they cannot drift from it.

- ``<!-- layer-catalogue -->`` becomes a table of every class in ``flowforge.transforms.__all__``:
  map (the docstring's summary), log-det, cheap direction, inverse method, cost (the docstring's
  ``Cost:`` paragraph) and paper (its ``References:`` section).
- ``<!-- cli-reference -->`` becomes one table of options per ``flowforge`` command, read from the
  typer application itself.

A layer added to ``__all__`` without an entry in :data:`LOG_DET` fails the build (``--strict``
turns the hook's error into a failure), so the catalogue cannot silently lose a column.
"""

from __future__ import annotations

import contextlib
import inspect
import re

PLACEHOLDER = "<!-- layer-catalogue -->"
CLI_PLACEHOLDER = "<!-- cli-reference -->"

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


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, layer_catalogue())
    if CLI_PLACEHOLDER in markdown:
        markdown = markdown.replace(CLI_PLACEHOLDER, cli_reference())
    return markdown
