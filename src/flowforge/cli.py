"""The ``flowforge`` command line (also ``python -m flowforge``).

Commands: ``fit``, ``vi``, ``sample``, ``eval``, ``check``, ``list``, ``experiment``, ``bench``;
``flowforge COMMAND --help`` describes each. Exit codes: 0 success; 2 bad usage or bad input
(one line saying why, no traceback); 1 internal failure (the traceback goes to a log file
whose path is printed); 130 interrupted (after a final checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer

from .errors import FlowforgeError, ShapeError, SpecError

__all__ = ["app", "main"]

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


@app.command()
def fit(
    data: Annotated[
        str, typer.Option(help="A built-in 2-D data set (see `flowforge list`) or a .csv/.npy/.npz file.")
    ] = "moons",
    model: Annotated[
        str, typer.Option(help="'default', a model of flowforge.models, or a .yaml/.json spec.")
    ] = "default",
    model_args: Annotated[str | None, typer.Option(help="JSON keyword arguments of a named model.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps.")] = 2000,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Global minibatch (split across processes under torchrun).")
    ] = 256,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (cosine schedule).")] = 1e-2,
    n: Annotated[
        int,
        typer.Option(
            "--n",
            "--rows",
            min=2,
            help="Rows drawn from a built-in data set (--rows under torchrun, which reads --n as its own).",
        ),
    ] = 20_000,
    out: Out = Path("runs/fit"),
    seed: Seed = 0,
    device: Device = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's checkpoint.")] = False,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 500,
    progress: Progress = True,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the report's figures.")] = True,
    threads: Threads = None,
    memmap: Annotated[
        bool,
        typer.Option(help="Read a .npy file memory-mapped, minibatch by minibatch (always for a directory)."),
    ] = False,
) -> None:
    """Fit a flow by maximum likelihood; write the model, metrics.json, figures and report.md/.html.

    Runs data-parallel under torchrun (`torchrun --nproc_per_node N -m flowforge fit ...`):
    --batch-size is the global batch, split across the processes; rank 0 writes the run folder.
    """
    from .train.distributed import env_rank
    from .train.runs import fit_run

    rank = env_rank()
    _use_log(out / ("flowforge.log" if rank == 0 else f"flowforge.rank{rank}.log"))
    metrics = fit_run(
        data=data,
        model=model,
        model_args=_parse_json(model_args, "--model-args"),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        n=n,
        out=out,
        seed=seed,
        device=device,
        resume=resume,
        checkpoint_every=checkpoint_every,
        progress=progress,
        plots=plots,
        threads=threads,
        command=_command(),
        memmap=memmap,
    )
    if rank:
        return
    nll = metrics["test_nll"]
    typer.echo(
        f"test NLL {nll:.4f} nats ({metrics['test_bits_per_dim']:.4f} bits/dim)" if nll is not None else ""
    )
    typer.echo(f"wrote {out}/model, metrics.json, report.md, report.html")


@app.command()
def vi(
    target: Annotated[str, typer.Option(help="A target of flowforge.targets, or module:function.")],
    model: Annotated[
        str, typer.Option(help="'default', a model of flowforge.models, or a spec file.")
    ] = "default",
    model_args: Annotated[str | None, typer.Option(help="JSON keyword arguments of a named model.")] = None,
    dim: Annotated[int | None, typer.Option(min=1, help="Dimension, for targets that do not say.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimisation steps.")] = 2000,
    samples: Annotated[int, typer.Option(min=1, help="Monte Carlo samples per step.")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate (cosine decay).")] = 5e-3,
    iw: Annotated[int | None, typer.Option(min=1, help="Importance samples per row (IW bound).")] = None,
    anneal: Annotated[str | None, typer.Option(help="BETA0:STEPS, a linear rise of beta to 1.")] = None,
    out: Out = Path("runs/vi"),
    seed: Seed = 0,
    device: Device = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's checkpoint.")] = False,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 500,
    progress: Progress = True,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the report's figures.")] = True,
    threads: Threads = None,
    restarts: Annotated[
        int, typer.Option(min=1, help="Independent fits from different seeds, cross-checked; best kept.")
    ] = 1,
) -> None:
    """Fit a flow to an unnormalized density by variational inference (reverse KL).

    Prints the ELBO, PSIS k-hat, the importance ESS and one verdict line (does the fit cover the
    posterior, miss mass, or disagree across restarts); k-hat above 0.7 is a separate warning.
    """
    from .train.distributed import env_rank
    from .train.runs import vi_run

    rank = env_rank()
    _use_log(out / ("flowforge.log" if rank == 0 else f"flowforge.rank{rank}.log"))
    metrics = vi_run(
        target=target,
        model=model,
        model_args=_parse_json(model_args, "--model-args"),
        dim=dim,
        steps=steps,
        samples=samples,
        lr=lr,
        iw=iw,
        anneal=_anneal(anneal),
        out=out,
        seed=seed,
        device=device,
        resume=resume,
        checkpoint_every=checkpoint_every,
        progress=progress,
        plots=plots,
        threads=threads,
        restarts=restarts,
        command=_command(),
    )
    if rank:
        return
    typer.echo(f"final ELBO {metrics['final_elbo']:.4f} ± {metrics['final_elbo_se'] or 0:.4f}")
    khat, ess = metrics.get("psis_khat"), metrics.get("importance_ess_fraction")
    if khat is not None and ess is not None:
        typer.echo(f"PSIS k-hat {khat:.2f}, importance ESS {100 * ess:.1f}% of the draws")
    if metrics.get("verdict"):
        typer.echo(f"verdict: {metrics['verdict']}")
    for warning in metrics.get("warnings") or []:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"wrote {out}/model, metrics.json, report.md, report.html")


def _load_model(run: Path):
    from .io import load

    return load(run)


def _write_array(path: Path, array, names: list[str] | None = None) -> None:
    import numpy as np

    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, samples=array)
    elif suffix in (".csv", ".txt"):
        from .export import draws_to_csv

        draws_to_csv(array, path, names=names)
    else:
        raise BadInput(f"cannot write {path}: use a .csv, .npy or .npz file name")


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="A run folder or a saved model directory.")],
    n: Annotated[int, typer.Option("-n", min=1, help="Number of samples.")] = 1000,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file: .csv, .npy, .npz or .nc (ArviZ netCDF).")
    ] = Path("samples.csv"),
    seed: Seed = 0,
) -> None:
    """Draw samples from a saved model.

    For a `flowforge vi` run folder, the CSV header and the netCDF variables carry the target's
    coordinate names, and the netCDF file also holds log q and the log importance weights.
    """
    import torch

    if output.suffix.lower() not in (".csv", ".txt", ".npy", ".npz", ".nc"):
        raise BadInput(f"cannot write {output}: use a .csv, .npy, .npz or .nc file name")
    flow = _load_model(run)
    target = _vi_target(run)
    torch.manual_seed(seed)
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob((n,))
        # the target is evaluated only for the file that stores the importance weights
        nc = output.suffix.lower() == ".nc"
        log_weight = target.log_density(x) - log_q if nc and target is not None else None
    x = x.double().cpu().numpy()
    names = target.names if target is not None else None
    if nc:
        from .export import draws_to_netcdf

        try:
            draws_to_netcdf(
                x,
                output,
                names=names,
                log_q=log_q.double().cpu().numpy(),
                log_weight=None if log_weight is None else log_weight.double().cpu().numpy(),
            )
        except ImportError as e:
            raise BadInput(str(e)) from None
    else:
        _write_array(output, x, names=names)
    typer.echo(f"wrote {n} samples of shape {tuple(x.shape[1:])} to {output}")


def _vi_target(run: Path):
    """The target of a `flowforge vi` run folder (for names and weights), or None."""
    import json

    metrics = run / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        recorded = json.loads(metrics.read_text())
        name, dim = recorded.get("target"), recorded.get("dim")
        if not isinstance(name, str):
            return None
        from .train.runs import resolve_target

        target = resolve_target(name)
        return target if target.dim == dim else resolve_target(name, dim)
    except Exception:  # a target that cannot be rebuilt here only costs the names and weights
        return None


@app.command(name="eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder or a saved model directory.")],
    data: Annotated[str, typer.Option(help="A data file (.csv/.npy/.npz) or a built-in data set name.")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Rows drawn from a built-in data set.")] = 5000,
    per_row: Annotated[
        Path | None, typer.Option(help="Also write each row's log-density (.csv/.npy).")
    ] = None,
    seed: Seed = 1,
) -> None:
    """Mean negative log-likelihood and bits/dim of a saved model on data."""
    import torch

    from .datasets import load as load_data

    flow = _load_model(run)
    x = load_data(data, n=n, seed=seed, features=tuple(flow.event_shape))
    with torch.no_grad():
        dtype = next(iter(flow.parameters())).dtype if any(True for _ in flow.parameters()) else torch.float32
        lp = torch.cat([flow.log_prob(x[i : i + 4096].to(dtype)) for i in range(0, len(x), 4096)]).double()
    nll = -lp
    d = math.prod(flow.event_shape)
    finite = torch.isfinite(nll)
    result = {
        "rows": len(x),
        "mean_nll": float(nll.mean()),
        "nll_standard_error": float(nll[finite].std() / math.sqrt(max(int(finite.sum()), 1))),
        "bits_per_dim": float(nll.mean()) / (d * math.log(2)),
        "rows_with_zero_density": int((~finite).sum()),
    }
    if per_row is not None:
        _write_array(per_row, lp.numpy())
        result["per_row_log_density"] = str(per_row)
    typer.echo(json.dumps(result, indent=1))


@app.command()
def check(
    run: Annotated[Path, typer.Argument(help="A run folder or a saved model directory.")],
    data: Annotated[
        str | None, typer.Option(help="Points to check at (default: the model's own samples).")
    ] = None,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Number of points.")] = 256,
    jacobians: Annotated[int, typer.Option(min=0, help="Points that get a full Jacobian.")] = 32,
    strict: Annotated[bool, typer.Option(help="Exit with 1 when a check fails.")] = False,
    seed: Seed = 0,
) -> None:
    """Round trip, log-det against autograd, and Jacobian condition numbers at data points, per layer too."""
    import torch

    from .datasets import load as load_data
    from .diagnostics.health import layer_health
    from .train.diagnose import check_flow

    flow = _load_model(run)
    torch.manual_seed(seed)
    if data is None:
        x = flow.sample((n,))
    else:
        x = load_data(data, n=n, seed=seed, features=tuple(flow.event_shape))[:n]
    report = check_flow(flow, x, jacobians=jacobians)
    # Per layer: where a drift of the whole flow comes from (flowforge.diagnostics.health).
    health = layer_health(flow, x, jacobians=min(jacobians, 8))
    report["layers"] = health.as_dict()["layers"]
    report["problems"] = report["problems"] + health.problems
    report["passed"] = report["passed"] and health.passed
    typer.echo(json.dumps(report, indent=1))
    if strict and not report["passed"]:
        raise typer.Exit(1)


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0].strip()


@app.command(name="list")
def list_(
    what: Annotated[
        str | None, typer.Argument(help="layers, models, data, targets or experiments (default: all).")
    ] = None,
) -> None:
    """List layers, models, data sets, targets and experiments (one line each)."""
    from . import models, transforms
    from .experiments import EXPERIMENTS
    from .targets import TARGETS

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
    from .datasets import FILE_FORMATS, TOY2D, entropy

    rows = []
    for name in TOY2D:
        h = entropy(name)
        rows.append((name, "built-in 2-D data set" + (f" (entropy {h:.4f} nats)" if h is not None else "")))
    return [*rows, ("FILE", f"your own data: {', '.join(FILE_FORMATS)} (one row per sample)")]


def _describe_target(name: str) -> str:
    from .targets import get

    try:
        target = get(name)
    except Exception as e:  # a broken target must not break the listing
        return f"(cannot be made: {type(e).__name__}: {e})"
    known = f", log Z = {target.log_z:.4f}" if target.log_z is not None else ""
    return f"{_first_line(type(target).__doc__)} (dim {target.dim}{known})"


def _describe_experiment(name: str) -> str:
    from .experiments import get

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
    from .experiments import EXPERIMENTS, get

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
    root = Path(__file__).resolve().parents[2] / "bench"
    scripts = sorted(root.glob("*.py")) if root.is_dir() else []
    if not scripts:
        typer.echo("no benchmark scripts here: they live in the repository's bench/ folder")
        return
    typer.echo(f"benchmark scripts in {root} (run with: python bench/NAME.py):")
    for path in scripts:
        doc = path.read_text().split('"""')
        typer.echo(f"  {path.name:<26} {_first_line(doc[1]) if len(doc) > 2 else ''}".rstrip())


_USER_ERRORS = (SpecError, ShapeError, BadInput)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .datasets import DataError
    from .io import ModelFileError
    from .train import CheckpointError, TargetError

    return (*_USER_ERRORS, DataError, ModelFileError, CheckpointError, TargetError)


def _fail(message: str) -> None:
    typer.echo(f"flowforge: error: {' '.join(message.split())}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; always ends with ``SystemExit`` carrying the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state.update(log=None, argv=argv, handlers=[])
    command = typer.main.get_command(app)
    code = 0
    try:
        result = command.main(args=argv, prog_name="flowforge", standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if code == 130:  # typer's translation of KeyboardInterrupt; the engines log what they saved
            _fail("interrupted")
    except typer.Exit as e:
        code = e.exit_code
        if code == 130:
            _fail("interrupted")
    except typer.TyperException as e:  # usage errors: unknown options, bad values
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if message:
            _fail(f"{message} (see flowforge --help)")
        code = getattr(e, "exit_code", 2)
    except (KeyboardInterrupt, typer.Abort) as e:
        reason = e if isinstance(e, KeyboardInterrupt) else e.__cause__
        _fail(f"interrupted: {reason}" if reason is not None and str(reason) else "interrupted")
        code = 130
    except _user_errors() as e:
        _fail(str(e))
        code = 2
    except Exception:
        path = _state["log"] or Path(tempfile.gettempdir()) / f"flowforge-error-{int(time.time())}.log"
        with open(path, "a") as f:
            f.write(f"{_command()}\n{traceback.format_exc()}\n")
        error = sys.exc_info()[1]
        _fail(f"internal failure ({type(error).__name__}: {error}); the traceback is in {path}")
        code = 1
    finally:
        for handler in _state.get("handlers", []):
            log.removeHandler(handler)
            handler.close()
    raise SystemExit(code)
