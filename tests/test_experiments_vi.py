"""The VI experiments' quick variants: they run, write their outputs, and no ELBO beats log Z."""

from __future__ import annotations

import json
import math

import pytest

from flowforge import targets
from flowforge.experiments import EXPERIMENTS, get

STATUSES = {"covers", "misses", "disagree", "unchecked"}


def check_rows(rows: list[dict], target_of) -> None:
    assert rows
    for r in rows:
        assert "failed" not in r, r
        assert math.isfinite(r["elbo"]) and r["elbo_se"] >= 0
        assert all(math.isfinite(k) or k == -math.inf for k in r["khat"])
        assert r["status"] in STATUSES and r["verdict"]
        log_z = target_of(r).log_z
        if log_z is not None:
            # no ELBO can exceed log Z (beyond Monte Carlo error): the most basic sanity check
            assert r["elbo"] <= log_z + 4 * r["elbo_se"] + 1e-3, r


@pytest.mark.parametrize("name", ["energies", "eight-schools"])
def test_quick_variant_runs_and_reports(name, tmp_path):
    assert name in EXPERIMENTS
    results = get(name).run(quick=True, out=tmp_path, seed=0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["meta"]["quick"] is True and saved["meta"]["verdicts"]
    report = (tmp_path / "report.md").read_text()
    assert "## Verdict" in report and "## How this was made" in report
    assert list(tmp_path.glob("*.png"))
    key = "energy" if name == "energies" else "target"
    check_rows(results["rows"], lambda r: targets.get(r[key]))
    if name == "energies":
        # even on the quick budget the best U1 fit is within 1 nat of log Z (the worst is 2.7 away)
        best = max((r for r in results["rows"] if r["energy"] == "u1"), key=lambda r: r["elbo"])
        assert best["kl"] < 1.0
    else:
        nc = [r for r in results["rows"] if r["target"] == "eight-schools-noncentered"]
        assert min(r["kl"] for r in nc) < 0.3
        assert all(r["low_q_share"] is not None and 0 <= r["low_q_share"] <= 1 for r in results["rows"])
        two_runs = [g for g in results["groups"] if g["runs"] == 2]
        assert two_runs and all(isinstance(g["restarts_agree"], bool) for g in two_runs)
