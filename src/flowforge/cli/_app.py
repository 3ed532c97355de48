"""The command line's shared parts: the typer app, its logging, option types and input parsing."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlowforgeError

__all__ = ["BadInput", "app"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Normalizing flows: fit, sample, evaluate and check models; run the seeds' experiments.",
)

log = logging.getLogger("flowforge")
_state: dict = {"log": None}


class BadInput(FlowforgeError, ValueError):
    """A command-line argument that cannot be used (reported with exit code 2)."""


def _use_log(path: Path) -> None:
    """Send flowforge's log records to ``path`` (and warnings to stderr) for this command."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _state["log"] = path
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("flowforge: %(message)s"))
    log.setLevel(logging.INFO)
    log.addHandler(file_handler)
    log.addHandler(console)
    _state["handlers"] = [file_handler, console]


def _command() -> str:
    return "flowforge " + " ".join(shlex.quote(a) for a in _state.get("argv", []))


def _parse_json(text: str | None, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{what} must be a JSON object, e.g. '{{\"layers\": 6}}': {e}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object; got {type(value).__name__}")
    return value


def _anneal(text: str | None) -> tuple[float, int] | None:
    if not text:
        return None
    try:
        beta0, steps = text.split(":")
        return float(beta0), int(steps)
    except ValueError:
        raise BadInput(f"--anneal must look like BETA0:STEPS (e.g. 0.01:1000); got {text!r}") from None


Out = Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
Device = Annotated[str | None, typer.Option(help="cpu or cuda (default: cpu).")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
Threads = Annotated[
    int | None,
    typer.Option(
        min=1, help="CPU threads for torch (default: torch's choice; 1 is fastest for small models)."
    ),
]
# The options `fit` and `vi` share.
Model = Annotated[str, typer.Option(help="'default', a model of flowforge.models, or a .yaml/.json spec.")]
ModelArgs = Annotated[str | None, typer.Option(help="JSON keyword arguments of a named model.")]
Steps = Annotated[int, typer.Option(min=1, help="Optimisation steps.")]
Resume = Annotated[bool, typer.Option(help="Continue from the run folder's checkpoint.")]
CheckpointEvery = Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")]
Plots = Annotated[bool, typer.Option("--plots/--no-plots", help="Write the report's figures.")]
Compile = Annotated[
    bool,
    typer.Option(
        help="Train through torch.compile (CUDA graphs on one GPU, not under torchrun); the first compiled "
        "step takes seconds to minutes, a compiler failure falls back to eager with a warning."
    ),
]


def _start_run(out: Path) -> int:
    """This process's rank under torchrun (0 alone), with the log of the run folder set up for it."""
    from ..train.distributed import env_rank

    rank = env_rank()
    _use_log(out / ("flowforge.log" if rank == 0 else f"flowforge.rank{rank}.log"))
    return rank


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0].strip()
