"""Run folders: what ``flowforge fit`` does, callable from Python too (``flowforge vi``: :mod:`.vi_runs`).

A run folder holds ``model/`` (a saved model), ``metrics.json``, ``history.json``,
``figures/*.png``, ``report.md``, ``report.html`` and ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ..datasets import TOY2D, MemmapData, entropy, generate, load
from ..errors import SpecError
from ..flow import Flow
from ..io import build, save
from .distributed import resolve_device, setup
from .history import History
from .ml import evaluate, fit
from .report import write_json, write_report

__all__ = ["default_spec", "fit_run", "resolve_model", "thread_limit"]

log = logging.getLogger("flowforge.train")


SMALL_MODEL = 100_000


@contextlib.contextmanager
def thread_limit(flow: Flow, threads: int | None) -> Iterator[int]:
    """Run with ``threads`` intra-op threads (default: 1 below 100,000 parameters); yields the number.

    A second intra-op thread only adds synchronisation to the small matrices of small models: on a busy
    2-core machine it made the default fit 30x slower (2.3 against 79 steps/s). The global setting
    is restored afterwards.
    """
    previous = torch.get_num_threads()
    if threads is None:
        threads = 1 if sum(p.numel() for p in flow.parameters()) < SMALL_MODEL else previous
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


def default_spec(features: int) -> dict:
    """The default model: four rounds of LU-linear mixing and a rational-quadratic spline."""
    layers: list[dict] = []
    for _ in range(4):
        layers += [
            {"type": "LULinear", "features": features},
            {"type": "RationalQuadraticSpline", "features": features, "bins": 8, "bound": 4.0},
        ]
    return {"base": {"type": "StandardNormal", "shape": [features]}, "transforms": layers}


def resolve_model(model: str, event_shape: tuple[int, ...], model_args: dict | None = None) -> Flow:
    """``"default"``, a builder name of ``flowforge.models``, or a spec file (YAML/JSON) as a fresh flow."""
    from .. import models

    args = dict(model_args or {})
    if model == "default":
        if len(event_shape) != 1:
            raise SpecError(
                f"the default model is for vectors; data of event shape {event_shape} need --model"
            )
        flow = build(default_spec(event_shape[0]))
    elif model in models.__all__:
        size = {"features": event_shape[0]} if len(event_shape) == 1 else {"shape": list(event_shape)}
        flow = build({"model": model, **size, **args})
    elif Path(model).suffix in (".yaml", ".yml", ".json"):
        if not Path(model).is_file():
            raise SpecError(f"no model spec file {model}")
        flow = build(Path(model))
    else:
        raise SpecError(
            f"unknown model {model!r}; expected 'default', one of {sorted(models.__all__)}, "
            "or a .yaml/.json spec file"
        )
    if tuple(flow.event_shape) != tuple(event_shape):
        raise SpecError(
            f"the model's event shape {tuple(flow.event_shape)} does not match the data's {event_shape}"
        )
    return flow


def _split_data(
    data: str, n: int, seed: int, test_fraction: float, memmap: bool = False
) -> tuple[Tensor | MemmapData, Tensor | MemmapData | None, float | None]:
    if data in TOY2D:
        return generate(data, n, seed=seed), generate(data, max(1000, n // 5), seed=seed + 1), entropy(data)
    # A directory holds .npy shards: always memory-mapped, like a .npy file with memmap=True.
    x = MemmapData(data) if memmap or Path(data).is_dir() else load(data)
    n_test = int(len(x) * test_fraction)
    if n_test < 1:
        return x, None, None
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    if isinstance(x, MemmapData):
        return x.subset(perm[n_test:]), x.subset(perm[:n_test]), None
    return x[perm[n_test:]], x[perm[:n_test]], None


def _figures_2d(flow: Flow, history: History, test: Tensor, out: Path) -> list[tuple[str, str]]:
    from .. import plots

    made = [
        (
            plots.density_and_data(flow, test),
            "density.png",
            "Held-out data (left) and the learned log-density (right).",
        ),
        (
            plots.samples_and_data(flow, test),
            "samples.png",
            "Held-out data (left) and as many flow samples (right).",
        ),
        (plots.loss_curves(history), "loss.png", "Training loss per step and validation loss."),
        (
            plots.grid_deformation(flow, data=test),
            "grid.png",
            "A regular grid of the base space and its image under the flow (data in grey).",
        ),
        (plots.layer_by_layer(flow), "layers.png", "Base samples pushed through the flow, layer by layer."),
    ]
    figures = []
    for fig, name, caption in made:
        plots.save_figure(fig, out / "figures" / name)
        figures.append((f"figures/{name}", caption))
    return figures


def fit_run(
    *,
    data: str = "moons",
    model: str = "default",
    model_args: dict | None = None,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-2,
    n: int = 20_000,
    out: str | Path = "runs/fit",
    seed: int = 0,
    device: str | None = None,
    resume: bool = False,
    checkpoint_every: int = 500,
    progress: bool = True,
    plots: bool = True,
    threads: int | None = None,
    command: str | None = None,
    memmap: bool = False,
    compile: bool = False,
) -> dict:
    """Fit a model to a built-in data set or a data file and write a complete run folder.

    ``memmap=True`` (always for a directory of ``.npy`` shards) reads a ``.npy`` file memory-mapped,
    minibatch by minibatch (:class:`~flowforge.datasets.MemmapData`). Under ``torchrun`` every
    process trains (see :func:`~flowforge.fit`) and scores its share of the test rows; only rank 0
    writes the run folder.

    Returns:
        The metrics written to ``metrics.json`` (on every rank).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    world = setup(device)
    torch.manual_seed(seed)
    train, test, known_entropy = _split_data(data, n, seed, 0.1, memmap)
    flow = resolve_model(model, tuple(train.shape[1:]), model_args)
    log.info("fit: %s rows of %s, model %s, %d steps, out %s", len(train), data, model, steps, out)
    with thread_limit(flow, threads) as used_threads:
        history = fit(
            flow,
            train,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            progress=progress,
            checkpoint_dir=out / "checkpoints",
            checkpoint_every=checkpoint_every,
            resume=resume,
            compile=compile,
        )
        features = math.prod(train.shape[1:])
        test_nll = evaluate(flow, test, device=device, world=world) if test is not None else None
    s = history.summary
    metrics = {
        "data": data,
        "model": model,
        "parameters": sum(p.numel() for p in flow.parameters()),
        "rows_train": int(s["n_train"]),
        "rows_validation": s["n_val"],
        "rows_test": None if test is None else len(test),
        "steps": s["steps"],
        "batch_size": batch_size,
        "lr": lr,
        "threads": used_threads,
        "seconds": s["seconds"],
        "steps_per_second": s["steps_per_second"],
        "rollbacks": s["rollbacks"],
        "compiled": s.get("compiled", False),
        "processes": world.size,
        "best_validation_nll": s["best_val_loss"],
        "test_nll": test_nll,
        "test_bits_per_dim": None if test_nll is None else test_nll / (features * math.log(2)),
        "data_entropy": known_entropy,
        "test_nll_minus_entropy": None
        if known_entropy is None or test_nll is None
        else test_nll - known_entropy,
    }
    if not world.main:
        return metrics
    save(flow, out / "model", metadata={"command": command, "metrics": metrics})
    write_json(out / "metrics.json", metrics)
    history.save(out / "history.json")
    figures: list[tuple[str, str]] = []
    if plots:
        from .. import plots as P

        if tuple(flow.event_shape) == (2,) and test is not None:
            figures = _figures_2d(flow, history, test, out)
        else:
            P.save_figure(P.loss_curves(history), out / "figures" / "loss.png")
            figures = [("figures/loss.png", "Training loss per step and validation loss.")]
    gap = metrics["test_nll_minus_entropy"]
    summary = (
        f"Maximum-likelihood fit of the {model} model to {data} ({metrics['rows_train']} training rows) for "
        f"{s['steps']} steps in {s['seconds']:.0f} s. "
        + (f"Held-out NLL {test_nll:.4f} nats" if test_nll is not None else "No held-out rows")
        + (f", {gap:.4f} nats above the data's exact entropy." if gap is not None else ".")
    )
    events = "\n".join(f"step {e['step']}: {e['kind']}: {e['message']}" for e in history.events) or "none"
    write_report(
        out,
        title=f"flowforge fit: {data}",
        summary=summary,
        metrics=metrics,
        figures=figures,
        sections=[("Events", events)],
        command=command,
    )
    return metrics
