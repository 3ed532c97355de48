"""fit_vi with and without compile=True: marginal ms per step (CPU time) on an unnormalized banana.

Run: ``python bench/vi_compile.py``. The 50-step run of each variant absorbs the compilation;
the marginal cost is (600 steps - 100 steps) / 500, both with torch's compile cache warm.
"""

from __future__ import annotations

import time

import torch

import flowforge as ff
from flowforge import models

MODELS = {
    "NSF": lambda: models.NSF(2, kind="autoregressive", transforms=3, hidden=(64, 64)),
    "RealNVP": lambda: models.RealNVP(2, transforms=6, hidden=(64, 64)),
}


def banana(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x[:, 0] ** 2 / 4 + (x[:, 1] - 0.25 * x[:, 0] ** 2) ** 2)


def main() -> None:
    torch.set_num_threads(1)
    for name, build in MODELS.items():
        for compile in (False, True):
            seconds = {}
            for steps in (50, 100, 600):
                torch.manual_seed(0)
                start = time.process_time()
                options = dict(samples=256, progress=False, compile=compile, seed=0)
                h = ff.fit_vi(build(), banana, steps=steps, **options)
                seconds[steps] = time.process_time() - start
            ms = (seconds[600] - seconds[100]) / 500 * 1e3
            label = "compiled" if compile else "eager"
            elbo = h.summary["final_elbo"]
            print(f"{name:8s} {label:8s} {ms:6.2f} ms/step  final ELBO {elbo:.4f}", flush=True)


if __name__ == "__main__":
    main()
