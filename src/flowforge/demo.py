"""``python -m flowforge.demo``: a short maximum-likelihood fit on a built-in 2-D data set.

A plain Adam loop (the full training engine lives in ``flowforge.train``); writes a PNG of
the learned density next to the data and prints the NLL before and after.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import transforms as T
from .datasets import generate
from .distributions import StandardNormal
from .flow import Flow

__all__ = ["main", "make_flow"]


def make_flow(features: int = 2, layers: int = 4) -> Flow:
    """LU-linear mixing between rational-quadratic splines, ending in an affine scale."""
    ts: list[T.Transform] = []
    for _ in range(layers):
        ts += [T.LULinear(features), T.RationalQuadraticSpline(features, bins=8, bound=4.0)]
    ts.append(T.Diagonal(features))
    return Flow(StandardNormal((features,)), ts)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="moons")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    data = generate(args.data, 6000, seed=args.seed)
    train, test = data[:5000], data[5000:]
    flow = make_flow()
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    with torch.no_grad():
        start = -flow.log_prob(test).mean().item()
    for step in range(args.steps):
        batch = train[torch.randint(0, len(train), (256,))]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step:4d}  train NLL {loss.item():.3f}")
    with torch.no_grad():
        end = -flow.log_prob(test).mean().item()
    print(f"test NLL: {start:.3f} before, {end:.3f} after {args.steps} steps")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lin = torch.linspace(-5, 5, 200)
    xx, yy = torch.meshgrid(lin, lin, indexing="xy")
    grid = torch.stack([xx, yy], -1).reshape(-1, 2)
    with torch.no_grad():
        dens = flow.log_prob(grid).exp().reshape(200, 200)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    axes[0].scatter(test[:, 0], test[:, 1], s=2, alpha=0.5)
    axes[0].set_title(f"data: {args.data}")
    axes[1].imshow(dens, extent=(-5, 5, -5, 5), origin="lower", cmap="viridis")
    axes[1].set_title(f"learned density (test NLL {end:.2f})")
    for ax in axes:
        ax.set_xlim(-5, 5)
        ax.set_ylim(-5, 5)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "density.png", dpi=110)
    print(f"wrote {out / 'density.png'}")
    return end


if __name__ == "__main__":
    main()
