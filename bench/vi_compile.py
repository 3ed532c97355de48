"""fit_vi with and without compile=True: marginal ms per step (CPU time) on an unnormalized banana.

Run: python bench/vi_compile.py. The 50-step run of each variant absorbs the compilation; the
marginal cost is (600 steps - 100 steps) / 500, both with torch's compile cache warm.
"""

import time, torch, flowforge as ff
from flowforge import models

torch.set_num_threads(1)


def banana(x):
    return -0.5 * (x[:, 0] ** 2 / 4 + (x[:, 1] - 0.25 * x[:, 0] ** 2) ** 2)


for name, build in [
    ("NSF", lambda: models.NSF(2, kind="autoregressive", transforms=3, hidden=(64, 64))),
    ("RealNVP", lambda: models.RealNVP(2, transforms=6, hidden=(64, 64))),
]:
    for comp in (False, True):
        r = {}
        for n in (50, 100, 600):
            torch.manual_seed(0)
            f = build()
            t = time.process_time()
            h = ff.fit_vi(f, banana, steps=n, samples=256, progress=False, compile=comp, seed=0)
            r[n] = time.process_time() - t
        print(
            name,
            "compiled" if comp else "eager",
            f"marginal {(r[600] - r[100]) / 500 * 1e3:.2f} ms/step",
            h.summary.get("compiled"),
            f"final ELBO {h.summary['final_elbo']:.4f}",
            flush=True,
        )
