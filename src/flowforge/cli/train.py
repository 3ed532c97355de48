"""``flowforge fit`` and ``flowforge vi``: train a flow and write a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import (
    CheckpointEvery,
    Compile,
    Device,
    Model,
    ModelArgs,
    Out,
    Plots,
    Progress,
    Resume,
    Seed,
    Steps,
    Threads,
    _anneal,
    _command,
    _parse_json,
    _start_run,
    app,
)

__all__ = ["fit", "vi"]


@app.command()
def fit(
    data: Annotated[
        str, typer.Option(help="A built-in 2-D data set (see `flowforge list`) or a .csv/.npy/.npz file.")
    ] = "moons",
    model: Model = "default",
    model_args: ModelArgs = None,
    steps: Steps = 2000,
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
    resume: Resume = False,
    checkpoint_every: CheckpointEvery = 500,
    progress: Progress = True,
    plots: Plots = True,
    threads: Threads = None,
    memmap: Annotated[
        bool,
        typer.Option(help="Read a .npy file memory-mapped, minibatch by minibatch (always for a directory)."),
    ] = False,
    compile: Compile = False,
) -> None:
    """Fit a flow by maximum likelihood; write the model, metrics.json, figures and report.md/.html.

    Runs data-parallel under torchrun (`torchrun --nproc_per_node N -m flowforge fit ...`):
    --batch-size is the global batch, split across the processes; rank 0 writes the run folder.
    """
    from ..train.runs import fit_run

    rank = _start_run(out)
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
        compile=compile,
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
    model: Model = "default",
    model_args: ModelArgs = None,
    dim: Annotated[int | None, typer.Option(min=1, help="Dimension, for targets that do not say.")] = None,
    steps: Steps = 2000,
    samples: Annotated[int, typer.Option(min=1, help="Monte Carlo samples per step.")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate (cosine decay).")] = 5e-3,
    iw: Annotated[int | None, typer.Option(min=1, help="Importance samples per row (IW bound).")] = None,
    anneal: Annotated[str | None, typer.Option(help="BETA0:STEPS, a linear rise of beta to 1.")] = None,
    out: Out = Path("runs/vi"),
    seed: Seed = 0,
    device: Device = None,
    resume: Resume = False,
    checkpoint_every: CheckpointEvery = 500,
    progress: Progress = True,
    plots: Plots = True,
    threads: Threads = None,
    restarts: Annotated[
        int, typer.Option(min=1, help="Independent fits from different seeds, cross-checked; best kept.")
    ] = 1,
    compile: Compile = False,
) -> None:
    """Fit a flow to an unnormalized density by variational inference (reverse KL).

    Prints the ELBO, PSIS k-hat, the importance ESS and one verdict line (does the fit cover the
    posterior, miss mass, or disagree across restarts); k-hat above 0.7 is a separate warning.
    """
    from ..train.vi_runs import vi_run

    rank = _start_run(out)
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
        compile=compile,
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
