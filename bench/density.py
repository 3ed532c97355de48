"""Density estimation at equal budget: flowforge against zuko, nflows and normflows (issue 4's quality bar).

For every data set and model, each library builds the same architecture (layers, conditioner
widths, bins, spline interval), starts from the same seed, and trains with the same loop:
Adam, cosine decay, gradient clipping, and the very same minibatches (drawn once from a seeded
generator). Vector data are standardised with the training set's mean and scale for everyone
and every NLL is reported in the original units (``+ sum log scale``). The 8x8 digits are
dequantized with uniform noise (fresh each batch, the same draws for every library); vector
models see them flattened to 64 features, Glow as ``(1, 8, 8)`` images in ``[0, 1)``; they are
scored in bits per dimension (:func:`flowforge.transforms.dequantize.bits_per_dim`, the
dequantization bound averaged over ``--test-draws`` noise draws).

Printed per run: test NLL (nats; bits/dim for digits), the gap to the exact entropy where it
is known (checkerboard, 8gaussians), ms per training step and samples per second, and the
parameter count. Speeds are measured after training, with the libraries taking turns over
several rounds (best round kept), so that the load of a shared machine hits all of them alike.

Peers are optional (``pip install -e ".[bench]"``); a library that is not importable, or a
model it does not offer with the same architecture, is skipped with a printed note.

Run ``python bench/density.py --help``; ``--quick`` is a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import flowforge
from flowforge import models
from flowforge.datasets import TOY2D, digits, entropy, generate
from flowforge.transforms.dequantize import bits_per_dim, uniform_dequantize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_models import Built, Unavailable

LIBRARIES = ("flowforge", "zuko", "nflows", "normflows", "normflows-made")
MODELS = ("MAF", "RealNVP", "RealNVP-half", "NSF-AR", "NSF-C", "Glow")
DATASETS = (*TOY2D, "digits")
IMAGE_MODELS = ("Glow",)
# On 2-D points a coupling NSF is the autoregressive one with a fixed order: run it on digits only.
DEFAULT_2D = ("MAF", "RealNVP", "NSF-AR")  # models of (C, H, W) images; the others see flat vectors
# A peer with more than this many times flowforge's parameters is not the same architecture.
SAME_SIZE = 1.1
# The shared architecture: conditioners with two hidden layers of 64 everywhere.
HIDDEN = 64
ARCH = {
    "MAF": {"transforms": 5},
    "RealNVP": {"transforms": 8},
    "RealNVP-half": {"transforms": 8},  # halves instead of alternating entries (normflows' partition)
    "NSF-AR": {"transforms": 5, "bins": 8, "bound": 5.0},
    "NSF-C": {"transforms": 5, "bins": 8, "bound": 5.0},
    "Glow": {"levels": 2, "steps": 4, "hidden": (32, 32)},
}


# -- builders, one per library ---------------------------------------------------------------
def build_flowforge(model: str, event: tuple[int, ...]) -> Built:
    a = ARCH[model]
    hidden = (HIDDEN, HIDDEN)
    d = math.prod(event)
    if model == "Glow":
        flow = models.Glow(event, levels=a["levels"], steps=a["steps"], hidden=a["hidden"])
    elif model == "MAF":
        flow = models.MAF(d, transforms=a["transforms"], hidden=hidden)
    elif model in ("RealNVP", "RealNVP-half"):
        mask = "half" if model == "RealNVP-half" else "alternate"
        flow = models.RealNVP(d, transforms=a["transforms"], hidden=hidden, mask=mask)
    else:
        kind = "autoregressive" if model == "NSF-AR" else "coupling"
        flow = models.NSF(
            d, kind=kind, transforms=a["transforms"], bins=a["bins"], bound=a["bound"], hidden=hidden
        )
    return Built(flow, flow.log_prob, lambda n: flow.sample((n,)))


def build_zuko(model: str, event: tuple[int, ...]) -> Built:
    zuko = importlib.import_module("zuko")
    if model in IMAGE_MODELS:
        raise Unavailable(f"zuko has no {model}")
    if model == "RealNVP-half":
        raise Unavailable("zuko's RealNVP alternates its masks")
    a, d = ARCH[model], math.prod(event)
    hidden = (HIDDEN, HIDDEN)
    if model == "MAF":
        flow = zuko.flows.MAF(d, transforms=a["transforms"], hidden_features=hidden)
    elif model == "RealNVP":
        flow = zuko.flows.RealNVP(d, transforms=a["transforms"], hidden_features=hidden)
    else:
        if a["bound"] != 5.0:
            raise Unavailable("zuko's splines have the fixed interval [-5, 5]")
        passes = {"passes": 2} if model == "NSF-C" else {}  # zuko's coupling NSF: a 2-pass MADE
        flow = zuko.flows.NSF(d, transforms=a["transforms"], bins=a["bins"], hidden_features=hidden, **passes)
    return Built(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


class _MLP(nn.Module):
    """Two hidden layers of ``HIDDEN``, last layer at zero (an identity start, as the other defaults)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_out)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def build_nflows(model: str, event: tuple[int, ...]) -> Built:
    importlib.import_module("nflows")
    if model in IMAGE_MODELS:
        raise Unavailable(f"nflows has no {model} builder")
    from nflows import transforms as nt
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.utils import create_alternating_binary_mask

    a, d = ARCH[model], math.prod(event)
    layers: list = []
    for i in range(a["transforms"]):
        mask = create_alternating_binary_mask(d, even=i % 2 == 0)
        if model == "RealNVP-half":  # nflows transforms the entries where the mask is positive
            mask = (torch.arange(d) >= d // 2).int() if i % 2 == 0 else (torch.arange(d) < d // 2).int()
        if model == "MAF":
            layers += [] if i == 0 else [nt.ReversePermutation(d)]
            layers.append(
                nt.MaskedAffineAutoregressiveTransform(d, HIDDEN, num_blocks=1, use_residual_blocks=False)
            )
        elif model in ("RealNVP", "RealNVP-half"):
            layers.append(nt.AffineCouplingTransform(mask, _MLP))
        elif model == "NSF-AR":
            spline = nt.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                d,
                HIDDEN,
                num_bins=a["bins"],
                tails="linear",
                tail_bound=a["bound"],
                num_blocks=1,
                use_residual_blocks=False,
            )
            layers += [nt.LULinear(d, identity_init=True), spline]
        else:
            spline = nt.PiecewiseRationalQuadraticCouplingTransform(
                mask, _MLP, num_bins=a["bins"], tails="linear", tail_bound=a["bound"]
            )
            layers += [nt.LULinear(d, identity_init=True), spline]
    flow = Flow(nt.CompositeTransform(layers), StandardNormal([d]))
    return Built(flow, flow.log_prob, flow.sample)


def build_normflows(model: str, event: tuple[int, ...]) -> Built:
    nf = importlib.import_module("normflows")
    if model in IMAGE_MODELS:
        # Its Glow blocks have other conditioners and split priors: not the same architecture.
        raise Unavailable(f"normflows has no {model} of the same architecture")
    a, d = ARCH[model], math.prod(event)
    layers: list = []
    for i in range(a["transforms"]):
        if model == "MAF":
            # normflows' MAF layer evaluates densities with the sequential pass (IAF arrangement).
            layers += [] if i == 0 else [nf.flows.Permute(d, mode="swap")]
            layers.append(
                nf.flows.MaskedAffineAutoregressive(d, HIDDEN, num_blocks=1, use_residual_blocks=False)
            )
        elif model in ("RealNVP", "RealNVP-half"):  # normflows splits halves (alternating in 2-D)
            net = nf.nets.MLP([d // 2, HIDDEN, HIDDEN, 2 * (d - d // 2)], init_zeros=True)
            layers += [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(d, mode="swap")]
        elif model == "NSF-AR":
            # normflows builds its conditioners from residual blocks (2 layers each): one block.
            spline = nf.flows.AutoregressiveRationalQuadraticSpline(
                d, 1, HIDDEN, num_bins=a["bins"], tail_bound=a["bound"]
            )
            layers += [spline, nf.flows.LULinearPermute(d)]
        else:
            spline = nf.flows.CoupledRationalQuadraticSpline(
                d, 1, HIDDEN, num_bins=a["bins"], tail_bound=a["bound"], reverse_mask=bool(i % 2)
            )
            layers += [spline, nf.flows.LULinearPermute(d)]
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), layers)
    return Built(flow, flow.log_prob, lambda n: flow.sample(n)[0])


def build_normflows_made(model: str, event: tuple[int, ...]) -> Built:
    """normflows' NSF-AR with the shared architecture: its own MADE, two hidden layers, no residual blocks.

    normflows' ``AutoregressiveRationalQuadraticSpline`` always builds residual blocks (57,540
    parameters here against about 36,700); its spline layer takes ``use_residual_blocks``, so this
    builds that layer directly, initialised as the wrapper does (identity start).
    """
    nf = importlib.import_module("normflows")
    if model != "NSF-AR":
        raise Unavailable("the residual-free variant is only needed for normflows' NSF-AR")
    from normflows.flows.neural_spline.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressive as Spline,
    )

    a, d = ARCH[model], math.prod(event)
    layers: list = []
    for _ in range(a["transforms"]):
        wrapper = nf.flows.AutoregressiveRationalQuadraticSpline(
            d, 1, HIDDEN, num_bins=a["bins"], tail_bound=a["bound"]
        )
        # num_blocks=1 without residual blocks: input layer, one hidden block, output (two hidden layers).
        wrapper.mprqat = Spline(
            features=d,
            hidden_features=HIDDEN,
            num_bins=a["bins"],
            tails="linear",
            tail_bound=a["bound"],
            num_blocks=1,
            use_residual_blocks=False,
            random_mask=False,
            activation=nn.ReLU(),
            init_identity=True,
        )
        layers += [wrapper, nf.flows.LULinearPermute(d)]
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), layers)
    return Built(flow, flow.log_prob, lambda n: flow.sample(n)[0])


BUILDERS = {
    "flowforge": build_flowforge,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
    "normflows-made": build_normflows_made,
}


def library_version(name: str) -> str | None:
    name = name.split("-")[0]  # "normflows-made" is normflows
    try:
        module = importlib.import_module(name)
    except Exception:  # any import failure means: not available here
        return None
    if name == "nflows":
        from importlib.metadata import version

        return version("nflows")
    return getattr(module, "__version__", "unknown")


# -- data ------------------------------------------------------------------------------------
@dataclass
class Data:
    """A data set as every library sees it: raw splits plus the shared preprocessing."""

    name: str
    train: Tensor  # float points, or long pixel levels (N, C, H, W)
    test: Tensor
    levels: int | None  # pixel levels of discrete data (dequantized), else None
    mean: Tensor  # standardisation of the flat (dequantized) training data
    sd: Tensor
    entropy: float | None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    def features(self, x: Tensor, generator: torch.Generator, *, image: bool) -> Tensor:
        """Dequantize discrete data; images stay in ``[0, 1)``, vectors are flattened and standardised."""
        if self.levels is not None:
            x = uniform_dequantize(x, self.levels, generator=generator)
        if image:
            return x
        return (x.reshape(len(x), -1) - self.mean) / self.sd

    def log_scale(self, *, image: bool) -> float:
        """Add to an NLL of :meth:`features` to get the NLL in data units."""
        return 0.0 if image else float(self.sd.log().sum())


def load_data(name: str, n_train: int, n_test: int, seed: int) -> Data:
    if name == "digits":
        split = digits(seed=seed)
        train = torch.cat([split.train, split.val])  # no early stopping here: validation rows train
        flat = uniform_dequantize(train, split.levels, generator=torch.Generator().manual_seed(seed))
        flat = flat.reshape(len(flat), -1)
        return Data(name, train, split.test, split.levels, flat.mean(0), flat.std(0), None)
    if name not in TOY2D:
        raise SystemExit(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    train = generate(name, n_train, seed=seed)
    test = generate(name, n_test, seed=seed + 10_000)  # an independent draw
    return Data(name, train, test, None, train.mean(0), train.std(0), entropy(name))


# -- one run ---------------------------------------------------------------------------------
def evaluate_nll(
    built: Built, data: Data, *, image: bool, draws: int, seed: int, chunk: int = 10_000
) -> float:
    """Mean test NLL in data units (averaged over dequantization draws for discrete data)."""
    draws = draws if data.levels is not None else 1
    generator = torch.Generator().manual_seed(seed + 1)  # the same noise for every library
    built.module.eval()
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            x = data.features(data.test, generator, image=image)
            total += sum(
                float(-built.log_prob(x[i : i + chunk]).double().sum()) for i in range(0, len(x), chunk)
            )
    built.module.train()
    return total / (draws * len(data.test)) + data.log_scale(image=image)


@dataclass
class Trained:
    built: Built
    opt: torch.optim.Optimizer
    params: list[Tensor]
    image: bool
    record: dict


def train(library: str, model: str, data: Data, args: argparse.Namespace, seed: int) -> Trained:
    """Train one library's model with the shared loop and score it on the test set."""
    image = model in IMAGE_MODELS
    if image and data.levels is None:
        raise Unavailable(f"{model} is an image model and {data.name} is not an image data set")
    torch.manual_seed(seed)
    event = data.image_shape if image else (math.prod(data.image_shape),)
    built = BUILDERS[library](model, event)
    params = [p for p in built.module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    batches = torch.Generator().manual_seed(seed)
    block, block_times, diverged = 50, [], None
    start = tick = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(data.train), (args.batch_size,), generator=batches)
        loss = -built.log_prob(data.features(data.train[idx], batches, image=image)).mean()
        if not torch.isfinite(loss):
            diverged = step
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        sched.step()
        if (step + 1) % block == 0:
            now = time.perf_counter()
            block_times.append((now - tick) / block * 1e3)
            tick = now
            projected = block_times[0] * args.steps / 60e3
            if step + 1 == block and projected > args.max_run_minutes:
                raise Unavailable(
                    f"too slow here: {block_times[0]:.0f} ms/step, {projected:.0f} min projected "
                    f"(--max-run-minutes {args.max_run_minutes:g})"
                )
    train_s = time.perf_counter() - start
    nll = math.nan
    if diverged is None:
        nll = evaluate_nll(built, data, image=image, draws=args.test_draws, seed=seed)
    dims = math.prod(data.image_shape)
    record = {
        "dataset": data.name,
        "library": library,
        "model": model,
        "seed": seed,
        "test_nll": nll,
        "bits_per_dim": None if data.levels is None else bits_per_dim(nll, dims, levels=data.levels),
        "entropy": data.entropy,
        "gap": None if data.entropy is None else nll - data.entropy,
        "ms_per_step": math.nan,
        "samples_per_s": math.nan,
        "samples_timed": 0,
        "train_ms_per_step": statistics.median(block_times) if block_times else train_s / (step + 1) * 1e3,
        "params": sum(p.numel() for p in params),
        "train_s": train_s,
        "diverged_at": diverged,
    }
    return Trained(built, opt, params, image, record)


def _sample_seconds(built: Built, n: int) -> float:
    start = time.perf_counter()
    built.sample(n)
    return time.perf_counter() - start


def time_interleaved(runs: list[Trained], data: Data, args: argparse.Namespace, seed: int) -> None:
    """ms/step and samples/s of trained models, in alternating rounds (best round of each).

    The libraries take turns, ``--timing-rounds`` times, so that the load of a shared machine
    hits all of them alike: timing each library right after its own training would not.
    A training step here is the one of the benchmark (forward, backward, clip, Adam) on one
    fixed batch; sampling draws the same number of samples in every library, fewer than
    ``--sample-n`` when the slowest sampler would need more than about 5 s for them.
    """
    runs = [r for r in runs if r.record["diverged_at"] is None]
    if not runs:
        return
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(data.train), (args.batch_size,), generator=gen)
    for r in runs:
        r.built.module.eval()
    with torch.no_grad():
        probe = max(_sample_seconds(r.built, 100) / 100 for r in runs)  # seconds per sample
    for r in runs:
        r.built.module.train()
    n = max(100, min(args.sample_n, int(5.0 / probe)))
    best_step = [math.inf] * len(runs)
    best_sample = [math.inf] * len(runs)
    for _ in range(args.timing_rounds):
        for i, r in enumerate(runs):
            x = data.features(data.train[idx], gen, image=r.image)
            start = time.perf_counter()
            for _ in range(args.timing_steps):
                loss = -r.built.log_prob(x).mean()
                r.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(r.params, args.clip)
                r.opt.step()
            best_step[i] = min(best_step[i], (time.perf_counter() - start) / args.timing_steps)
            r.built.module.eval()
            with torch.no_grad():
                best_sample[i] = min(best_sample[i], _sample_seconds(r.built, n))
            r.built.module.train()
    for i, r in enumerate(runs):
        r.record.update(ms_per_step=best_step[i] * 1e3, samples_per_s=n / best_sample[i], samples_timed=n)


# -- reporting -------------------------------------------------------------------------------
def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
    return statistics.fmean(values) if values else math.nan


def table(dataset: str, rows: list[dict]) -> str:
    h = rows[0]["entropy"] if rows else None
    bpd = bool(rows) and rows[0]["bits_per_dim"] is not None
    title = f"### {dataset}" + (f" (exact entropy {h:.4f} nats)" if h is not None else "")
    score = "test bits/dim" if bpd else "test NLL (nats)"
    lines = [title, "", f"| model | library | {score} | gap to entropy | ms/step | samples/s | params |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for model in dict.fromkeys(r["model"] for r in rows):
        for library in dict.fromkeys(r["library"] for r in rows):
            sel = [r for r in rows if r["model"] == model and r["library"] == library]
            if not sel:
                continue
            values = [r["bits_per_dim" if bpd else "test_nll"] for r in sel]
            finite = [v for v in values if math.isfinite(v)]
            text = f"{statistics.fmean(finite):.4f}" if finite else "nan"
            if len(finite) > 1:
                text += f" ± {statistics.stdev(finite):.4f}"
            if len(finite) < len(values):
                text += f" ({len(values) - len(finite)} of {len(values)} diverged)"
            gap = "" if h is None else f"{_mean(sel, 'gap'):+.4f}"
            lines.append(
                f"| {model} | {library} | {text} | {gap} | {_mean(sel, 'ms_per_step'):.2f} | "
                f"{_mean(sel, 'samples_per_s'):,.0f} | {sel[0]['params']:,} |"
            )
    return "\n".join(lines)


def verdicts(results: list[dict]) -> list[str]:
    """flowforge's score against the best peer's, per data set and model (lower is better)."""
    out = []
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in results):
        sel = [r for r in results if r["dataset"] == dataset and r["model"] == model]
        key, unit = (
            ("bits_per_dim", "bits/dim") if sel[0]["bits_per_dim"] is not None else ("test_nll", "nats")
        )
        # Diverged runs (NaN) are left out of the means; the tables say how many there were.
        ours = [r[key] for r in sel if r["library"] == "flowforge" and math.isfinite(r[key])]
        peers: dict[str, list[float]] = {}
        for r in sel:
            if r["library"] != "flowforge" and math.isfinite(r[key]):
                peers.setdefault(r["library"], []).append(r[key])
        if not ours or not peers:
            continue
        best_name, best = min(((k, statistics.fmean(v)) for k, v in peers.items()), key=lambda kv: kv[1])
        delta = statistics.fmean(ours) - best
        verdict = "at least as good" if delta <= 0 else "worse"
        # Per seed: is flowforge at least as good as every peer on that seed?
        by_seed: dict[int, dict[str, float]] = {}
        for r in sel:
            by_seed.setdefault(r["seed"], {})[r["library"]] = r[key]
        paired = [v for v in by_seed.values() if "flowforge" in v and len(v) > 1]
        wins = sum(
            v["flowforge"] <= min((x for k, x in v.items() if k != "flowforge" and x == x), default=math.inf)
            for v in paired
        )  # x == x drops NaN (a diverged peer)
        seeds = f" (best on {wins} of {len(paired)} seeds)" if len(paired) > 1 else ""
        head = f"{dataset:13s} {model:8s} flowforge - best peer ({best_name})"
        out.append(f"{head} = {delta:+.4f} {unit}: {verdict}{seeds}")
        # A best peer with many more parameters is not the same architecture (normflows' residual
        # conditioners): say how flowforge stands against the peers of its own size as well.
        size = {r["library"]: r["params"] for r in sel}
        same = {k: v for k, v in peers.items() if size[k] <= SAME_SIZE * size.get("flowforge", math.inf)}
        if same and best_name not in same:
            name, value = min(((k, statistics.fmean(v)) for k, v in same.items()), key=lambda kv: kv[1])
            delta = statistics.fmean(ours) - value
            verdict = "at least as good" if delta <= 0 else "worse"
            head = f"{'':22s} flowforge - best peer of its size ({name})"
            out.append(f"{head} = {delta:+.4f} {unit}: {verdict}")
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--datasets", default=",".join(DATASETS), help=f"comma-separated from {', '.join(DATASETS)}"
    )
    p.add_argument(
        "--models",
        default="auto",
        help=f"comma-separated from {', '.join(MODELS)}\n"
        f"(auto: {', '.join(DEFAULT_2D)} on 2-D sets, all on digits)",
    )
    p.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=10.0, help="gradient-norm clip")
    p.add_argument("--bins", type=int, default=8, help="spline bins of the NSF models (every library)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (model init, batches and data)")
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--n-test", type=int, default=50_000)
    p.add_argument("--test-draws", type=int, default=5, help="dequantization draws averaged on test images")
    p.add_argument("--sample-n", type=int, default=10_000, help="samples per timed sampling call (at most)")
    p.add_argument("--timing-rounds", type=int, default=5, help="interleaved timing rounds (best one kept)")
    p.add_argument("--timing-steps", type=int, default=20, help="training steps per timing round")
    p.add_argument("--max-run-minutes", type=float, default=30.0, help="skip a run projected to take longer")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default="bench/results/density.json", help="where to write the results")
    p.add_argument("--quick", action="store_true", help="a smoke run: 100 steps, 3 data sets, small data")
    p.add_argument("--render", nargs="+", metavar="JSON", help="print saved results as tables; train nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.n_train, args.n_test, args.test_draws = 100, 5000, 5000, 1
        if args.datasets == ",".join(DATASETS):
            args.datasets = "moons,checkerboard,digits"
    return args


def render(paths: list[str]) -> None:
    """Print the markdown tables and verdicts of saved result files (how bench/README.md is written).

    The files' results are pooled: runs of the same (data set, model, library) with different seeds,
    from one file or several, are shown as mean ± sd over the seeds. A run (data set, model,
    library, seed) found in several files is taken from the last file that has it: a newer
    measurement of the same run replaces the older one.
    """
    runs: dict[tuple, dict] = {}
    for path in paths:
        saved = json.loads(Path(path).read_text())
        meta = saved["meta"]
        print(f"Command: `{meta['command']}` ({meta['date']}; {meta['machine']['platform']}, ", end="")
        print(f"{meta['machine']['threads']} thread(s); versions {meta['versions']})\n")
        for r in saved["results"]:
            runs[(r["dataset"], r["model"], r["library"], r["seed"])] = r
    pooled = list(runs.values())
    for dataset in dict.fromkeys(r["dataset"] for r in pooled):
        print(table(dataset, [r for r in pooled if r["dataset"] == dataset]) + "\n")
    print("```text\n" + "\n".join(verdicts(pooled)) + "\n```\n")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render:
        render(args.render)
        return 0
    warnings.filterwarnings("ignore")  # peers' deprecation chatter
    if args.bins < 2:
        raise SystemExit(f"--bins must be at least 2; got {args.bins}")
    for name in ("NSF-AR", "NSF-C"):
        ARCH[name]["bins"] = args.bins
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets = [s for s in args.datasets.split(",") if s]
    chosen_models = list(MODELS) if args.models == "auto" else [s for s in args.models.split(",") if s]
    for m in chosen_models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; expected some of {', '.join(MODELS)}")
    versions = {name: library_version(name) for name in LIBRARIES}
    libraries = []
    for name in (s for s in args.libraries.split(",") if s):
        if name not in LIBRARIES:
            raise SystemExit(f"unknown library {name!r}; expected some of {', '.join(LIBRARIES)}")
        if versions[name] is None:
            print(f"note: {name} is not importable here; skipped (pip install -e '.[bench]')")
        else:
            libraries.append(name)
    seeds = [int(s) for s in args.seeds.split(",")]
    meta = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "args": vars(args),
        "versions": {**versions, "torch": torch.__version__, "flowforge": flowforge.__version__},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(
        f"flowforge density benchmark: {args.steps} steps, batch {args.batch_size}, seeds {seeds}, "
        f"{torch.get_num_threads()} thread(s); versions {meta['versions']}"
    )
    results: list[dict] = []
    out = Path(args.json)
    for dataset in datasets:
        rows = []
        for seed in seeds:
            data = load_data(dataset, args.n_train, args.n_test, seed)
            wanted = chosen_models
            if args.models == "auto" and data.levels is None:
                wanted = list(DEFAULT_2D)
            for model in wanted:
                if model in IMAGE_MODELS and data.levels is None:
                    continue  # an image model on 2-D points: nothing to compare
                group = []
                for library in libraries:
                    try:
                        trained = train(library, model, data, args, seed)
                    except Unavailable as e:
                        print(f"note: {library} {model}: {e}; skipped", flush=True)
                        continue
                    group.append(trained)
                    r = trained.record
                    score = f"NLL {r['test_nll']:.4f}"
                    if r["bits_per_dim"] is not None:
                        score += f" ({r['bits_per_dim']:.4f} bits/dim)"
                    print(
                        f"  {dataset} {model} {library} seed {seed}: {score}; {r['train_s']:.0f} s",
                        flush=True,
                    )
                time_interleaved(group, data, args, seed)
                for trained in group:
                    r = trained.record
                    print(
                        f"    {r['library']}: {r['ms_per_step']:.2f} ms/step, "
                        f"{r['samples_per_s']:,.0f} samples/s",
                        flush=True,
                    )
                rows += [t.record for t in group]
                write(out, meta, [*results, *rows])  # after every model: a long run can be cut short
        results += rows
        print()
        print(table(dataset, rows))
        print()
    for line in verdicts(results):
        print(line)
    write(out, meta, results)
    print(f"\nwrote {out}")
    return 0


def write(path: Path, meta: dict, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
