"""``flowforge sample``, ``eval`` and ``check``: use a saved model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from ._app import BadInput, Seed, app

__all__ = ["check", "evaluate", "sample"]


def _load_model(run: Path):
    from ..io import load

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
        from ..export import draws_to_csv

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
        from ..export import draws_to_netcdf

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
        from ..train.vi_runs import resolve_target

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

    from ..datasets import load as load_data

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
    if finite.any():
        # A mean far above the median is carried by a few rows the model stretches far away.
        levels = (0.5, 0.99, 0.999)
        q = torch.quantile(nll[finite], torch.tensor(levels, dtype=nll.dtype))
        result["nll_quantiles"] = {str(k): float(v) for k, v in zip(levels, q, strict=True)}
        result["nll_quantiles"]["max"] = float(nll[finite].max())
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

    from ..datasets import load as load_data
    from ..diagnostics.health import layer_health
    from ..train.diagnose import check_flow

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
