"""``flowforge list``, ``experiment`` and ``bench``: what there is, and the seeds' experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import BadInput, Seed, _first_line, _use_log, app

__all__ = ["bench", "experiment", "list_"]


@app.command(name="list")
def list_(
    what: Annotated[
        str | None, typer.Argument(help="layers, models, data, targets or experiments (default: all).")
    ] = None,
) -> None:
    """List layers, models, data sets, targets and experiments (one line each)."""
    from .. import models, transforms
    from ..experiments import EXPERIMENTS
    from ..targets import TARGETS

    sections = {
        "layers": lambda: [
            (n, _first_line(getattr(transforms, n).__doc__)) for n in transforms.__all__ if n != "Transform"
        ],
        "models": lambda: [(n, _first_line(getattr(models, n).__doc__)) for n in models.__all__],
        "data": _describe_data,
        "targets": lambda: [(n, _describe_target(n)) for n in sorted(TARGETS)],
        "experiments": lambda: [(n, _describe_experiment(n)) for n in sorted(EXPERIMENTS)],
    }
    if what is not None and what not in sections:
        raise BadInput(f"unknown section {what!r}; expected one of {', '.join(sections)}")
    for name, rows in sections.items():
        if what is not None and name != what:
            continue
        typer.echo(f"{name}:")
        for key, text in rows() or [("(none yet)", "")]:
            typer.echo(f"  {key:<26} {text}".rstrip())


def _describe_data() -> list[tuple[str, str]]:
    from ..datasets import FILE_FORMATS, TOY2D, entropy

    rows = []
    for name in TOY2D:
        h = entropy(name)
        rows.append((name, "built-in 2-D data set" + (f" (entropy {h:.4f} nats)" if h is not None else "")))
    return [*rows, ("FILE", f"your own data: {', '.join(FILE_FORMATS)} (one row per sample)")]


def _describe_target(name: str) -> str:
    from ..targets import get

    try:
        target = get(name)
    except Exception as e:  # a broken target must not break the listing
        return f"(cannot be made: {type(e).__name__}: {e})"
    known = f", log Z = {target.log_z:.4f}" if target.log_z is not None else ""
    return f"{_first_line(type(target).__doc__)} (dim {target.dim}{known})"


def _describe_experiment(name: str) -> str:
    from ..experiments import get

    try:
        module = get(name)
    except Exception as e:  # a broken experiment must not break the listing
        return f"(cannot be imported: {type(e).__name__}: {e})"
    return _first_line(getattr(module, "CLAIM", None) or module.__doc__)


@app.command()
def experiment(
    name: Annotated[str, typer.Argument(help="An experiment (see `flowforge list experiments`).")],
    quick: Annotated[bool, typer.Option(help="A short version (under a minute on 2 CPU cores).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")] = None,
    seed: Seed = 0,
) -> None:
    """Re-run one of the seeds' experiments and write its report."""
    from ..experiments import EXPERIMENTS, get

    if name not in EXPERIMENTS:
        raise BadInput(
            f"unknown experiment {name!r}; expected one of {', '.join(sorted(EXPERIMENTS)) or 'none yet'}"
        )
    out = out or Path("runs") / f"experiment-{name}{'-quick' if quick else ''}"
    _use_log(out / "flowforge.log")
    get(name).run(quick=quick, out=out, seed=seed)
    typer.echo(f"wrote {out}/report.md")


@app.command()
def bench() -> None:
    """Where the benchmark scripts are and how to run them."""
    root = Path(__file__).resolve().parents[3] / "bench"
    scripts = sorted(root.glob("*.py")) if root.is_dir() else []
    if not scripts:
        typer.echo("no benchmark scripts here: they live in the repository's bench/ folder")
        return
    typer.echo(f"benchmark scripts in {root} (run with: python bench/NAME.py):")
    for path in scripts:
        doc = path.read_text().split('"""')
        typer.echo(f"  {path.name:<26} {_first_line(doc[1]) if len(doc) > 2 else ''}".rstrip())
