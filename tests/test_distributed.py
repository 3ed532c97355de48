"""Data-parallel training under torchrun's contract (2 gloo processes on CPU) and memory-mapped data.

The 2-process runs are started the way torchrun starts its workers: one Python process per rank
with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set (torchrun's own agent would add
several seconds per launch on a busy machine; docs/distributed.md launches with torchrun itself).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge as ff
from flowforge import transforms as T
from flowforge.datasets import DataError, MemmapData, generate
from flowforge.train import load_checkpoint
from flowforge.train.distributed import World, replicate, setup
from flowforge.train.runs import fit_run


def actnorm_flow() -> ff.Flow:
    # ActNorm initialises from the first minibatch: the ranks must see the whole global one.
    torch.manual_seed(0)
    ts: list = []
    for _ in range(2):
        ts += [T.ActNorm(2), T.LULinear(2), T.RationalQuadraticSpline(2, bins=6, bound=4.0)]
    return ff.Flow(ff.distributions.StandardNormal((2,)), ts)


ML = dict(steps=30, batch_size=64, lr=1e-2, eval_every=10, dtype=torch.float64, progress=False)

WORKER = """
import json, math, os, sys, torch
torch.set_num_threads(1)
import flowforge as ff
from flowforge import transforms as T
from flowforge.cli import main
from flowforge.datasets import generate
from flowforge.train.distributed import reduce_vi_stats, setup
sys.path.insert(0, sys.argv[2])
from test_distributed import CLI, ML, actnorm_flow

out, rank = sys.argv[1], int(os.environ["RANK"])
flow = actnorm_flow()
h = ff.fit(flow, generate("moons", 1000, seed=0), **ML)
torch.save(flow.state_dict(), f"{out}/ml{rank}.pt")

# VI: the 64 samples of a step are split 32 + 32; the ELBO statistics are reduced.
torch.manual_seed(0)
q = ff.Flow(ff.distributions.StandardNormal((2,)), [T.Diagonal(2)])
target = lambda x: -0.5 * (((x - 3.0) / 0.5) ** 2).sum(-1)
hv = ff.fit_vi(q, target, steps=150, lr=0.05, samples=64, progress=False)
draw = torch.randn(3).tolist()  # this rank's random stream after training

# The merge of per-rank ELBO statistics against the statistics of all draws at once.
w = torch.linspace(-1, 2, 10, dtype=torch.float64) ** 2
mine = w[:4] if rank == 0 else w[4:]
stats = {"elbo": float(mine.mean()), "elbo_se": float(mine.std() / math.sqrt(4 if rank == 0 else 6)),
         "nonfinite": rank}
merged = reduce_vi_stats(setup(), stats, 4 + rank if rank == 0 else 6 + rank)
result = dict(ml_val=h["val_loss"], ml_loss=h["loss"], elbo=hv["elbo"], elbo_se=hv["elbo_se"],
              vi_params=[p.tolist() for p in q.parameters()], draw=draw, merged=merged,
              world=os.environ["WORLD_SIZE"])
json.dump(result, open(f"{out}/rank{rank}.json", "w"))

# Last, the command line's fit, which the test kills at its first checkpoint and then resumes.
main(["fit", *CLI, "--out", f"{out}/run"])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], *, n: int = 2) -> list[subprocess.Popen]:
    """Start ``n`` ranks of ``python args...`` as torchrun would (its environment variables)."""
    port = str(free_port())
    procs = []
    for rank in range(n):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(n),
            LOCAL_WORLD_SIZE=str(n),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            OMP_NUM_THREADS="1",
        )
        procs.append(subprocess.Popen([sys.executable, *args], env=env))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float = 300) -> None:
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * len(procs), codes


CLI = ["--rows", "1000", "--steps", "80", "--batch-size", "64", "--checkpoint-every", "10"]
CLI += ["--no-plots", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One 2-process launch (fit, fit_vi, then `flowforge fit` killed at its first checkpoint), one resume."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    procs = launch([str(script), str(out), str(Path(__file__).parent)])
    ckpt = out / "run" / "checkpoints" / "checkpoint.pt"
    deadline = time.time() + 300
    try:
        while not ckpt.exists():
            codes = [p.poll() for p in procs]
            assert codes == [None, None], f"a rank ended (exit codes {codes}) before the first checkpoint"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.01)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
    state = load_checkpoint(out / "run" / "checkpoints")
    (out / "killed.json").write_text(json.dumps({"step": state["step"], "finished": state["finished"]}))
    assert state["world_size"] == 2 and not (out / "run" / "model").exists()
    wait(launch(["-m", "flowforge", "fit", *CLI, "--out", str(out / "run"), "--resume"]))
    return out


def test_two_processes_reach_the_parameters_of_one(two_ranks):
    reference = actnorm_flow()
    h = ff.fit(reference, generate("moons", 1000, seed=0), **ML)
    ranks = [torch.load(two_ranks / f"ml{r}.pt", weights_only=True) for r in range(2)]
    for key, value in reference.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # the ranks stay in lockstep
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-9, atol=1e-9, msg=key)
    result = json.loads((two_ranks / "rank0.json").read_text())
    # The logged loss is the global batch's mean, the validation loss the mean over all rows.
    np.testing.assert_allclose(result["ml_loss"], h["loss"], rtol=1e-9)
    np.testing.assert_allclose(result["ml_val"], h["val_loss"], rtol=1e-9)


def test_vi_splits_samples_and_reduces_the_elbo(two_ranks):
    r0, r1 = (json.loads((two_ranks / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["world"] == "2"
    assert r0["vi_params"] == r1["vi_params"] and r0["elbo"] == r1["elbo"]  # one model, one ELBO
    assert r0["draw"] != r1["draw"]  # but each rank draws its own samples
    # From about -40 at the start, the ELBO approaches log Z = log(2 pi 0.25) of the Gaussian target.
    assert np.mean(r0["elbo"][:5]) < -10
    assert abs(np.mean(r0["elbo"][-20:]) - math.log(2 * math.pi * 0.25)) < 0.3
    w = torch.linspace(-1, 2, 10, dtype=torch.float64) ** 2
    merged = r0["merged"]
    assert merged == r1["merged"] and merged["nonfinite"] == 1
    assert math.isclose(merged["elbo"], float(w.mean()), rel_tol=1e-12)
    assert math.isclose(merged["elbo_se"], float(w.std() / math.sqrt(10)), rel_tol=1e-9)


def test_killed_two_process_cli_run_resumes(two_ranks, tmp_path):
    killed = json.loads((two_ranks / "killed.json").read_text())
    assert not killed["finished"] and 10 <= killed["step"] < 80, killed
    out = two_ranks / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 80
    history = json.loads((out / "history.json").read_text())
    assert [e["kind"] for e in history["events"]].count("resumed") == 1
    # The same run in one process: float32 sums in another order, the same parameters otherwise.
    fit_run(data="moons", n=1000, steps=80, batch_size=64, out=tmp_path / "one", progress=False, plots=False)
    one, two = ff.load(tmp_path / "one" / "model"), ff.load(out / "model")
    for (key, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=key)
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert math.isclose(metrics["test_nll"], single["test_nll"], rel_tol=1e-4)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("flowforge")) == [
        "flowforge.log",
        "flowforge.rank1.log",
    ]


TEARDOWN = """
import json, os, sys, torch
torch.set_num_threads(1)
import flowforge as ff
from flowforge import transforms as T
from flowforge.datasets import generate
from flowforge.train import distributed

def threads():  # thread names where /proc has them (the exit-handler test skips elsewhere)
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks)

def flow():
    torch.manual_seed(0)
    return ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.Diagonal(2)])

data = generate("moons", 200, seed=0)
target = lambda x: -0.5 * (((x - 1.0) / 0.5) ** 2).sum(-1)
out = {}
for compile in (False, True):
    kw = dict(steps=6, lr=1e-2, progress=False, dtype=torch.float64, compile=compile)
    ml = ff.fit(flow(), data, batch_size=32, **kw)
    vi = ff.fit_vi(flow(), target, samples=8, seed=0, **kw)
    compiled = [h.summary.get("compiled") for h in (ml, vi)]
    out[str(compile)] = dict(ml=ml["loss"], vi=vi["elbo"], compiled=compiled)
out["during"] = threads()
distributed._destroy()  # what the exit handler of setup() runs
out["after"] = threads()
json.dump(out, open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w"))
"""


@pytest.fixture(scope="module")
def compiled_ranks(tmp_path_factory) -> list[dict]:
    """One 2-process launch: fit and fit_vi eager, then compiled; then the exit handler."""
    out = tmp_path_factory.mktemp("teardown")
    script = out / "teardown.py"
    script.write_text(TEARDOWN)
    wait(launch([str(script), str(out)]))
    return [json.loads((out / f"{rank}.json").read_text()) for rank in range(2)]


def test_compiled_steps_of_two_processes_equal_the_eager_ones(compiled_ranks):
    for seen in compiled_ranks:
        assert seen["True"]["compiled"] == [True, True], seen["True"]  # the compiled step ran
        for key in ("ml", "vi"):
            np.testing.assert_allclose(seen["True"][key], seen["False"][key], rtol=1e-9, atol=1e-9)
    assert compiled_ranks[0]["True"] == compiled_ranks[1]["True"]  # the ranks stay in lockstep


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_the_exit_handler_stops_the_process_group_threads(compiled_ranks):
    # gloo threads alive at interpreter exit abort a process now and then (exit code -6, "terminate
    # called without an active exception"); a late import of torch.distributed.nn and dynamo's caches
    # of compiled steps kept them alive.
    for seen in compiled_ranks:
        assert any("gloo" in name for name in seen["during"]), seen  # the check can see them
        assert not any("gloo" in name for name in seen["after"]), seen


# -- memory-mapped data --------------------------------------------------------------------------
def shards(tmp_path: Path, x: np.ndarray, parts: int) -> Path:
    folder = tmp_path / "shards"
    folder.mkdir()
    for i, chunk in enumerate(np.array_split(x, parts)):
        np.save(folder / f"part-{i:03d}.npy", chunk)
    return folder


def spline_flow() -> ff.Flow:
    torch.manual_seed(0)
    ts = [T.LULinear(2), T.RationalQuadraticSpline(2, bins=6, bound=4.0)]
    return ff.Flow(ff.distributions.StandardNormal((2,)), ts)


def test_memmap_shards_train_like_the_array_in_memory(tmp_path):
    x = generate("moons", 1500, seed=0).double().numpy() * 3 + 5
    data = MemmapData(shards(tmp_path, x, 4), dtype=torch.float64)
    assert data.shape == (1500, 2) and len(data.files) == 4
    kwargs = dict(steps=60, batch_size=32, dtype=torch.float64, progress=False, eval_every=20)
    # 60 steps of 32 rows visit more rows than the 1350 training rows: the sampler wraps an epoch.
    lazy, eager = spline_flow(), spline_flow()
    h_lazy = ff.fit(lazy, data, **kwargs)
    h_eager = ff.fit(eager, torch.from_numpy(x), **kwargs)
    for a, b in zip(lazy.state_dict().values(), eager.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert h_lazy["val_loss"] == h_eager["val_loss"]
    # The streaming standardizer is the one fitted in memory on the same training rows.
    std = lazy.transform.transforms[-1]
    assert isinstance(std, T.Standardize)
    torch.testing.assert_close(std.mean, eager.transform.transforms[-1].mean, rtol=1e-12, atol=0)
    assert ff.train.evaluate(lazy, data) == pytest.approx(
        ff.train.evaluate(eager, torch.from_numpy(x)), rel=1e-12
    )


def test_memmap_file_streams_in_chunks_and_names_bad_rows(tmp_path):
    x = np.random.default_rng(0).normal(size=(1000, 3)) * [1.0, 10.0, 0.1] + [0.0, 1.0, -2.0]
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    data = MemmapData(tmp_path / "x.npy")
    scan = data.scan(chunk_rows=64)  # 16 chunks merged
    torch.testing.assert_close(scan.mean, torch.from_numpy(x.astype(np.float32).mean(0, dtype=np.float64)))
    torch.testing.assert_close(scan.std, torch.from_numpy(x.astype(np.float32).astype(np.float64).std(0)))
    rows = torch.tensor([999, 3, 500, 3])
    assert torch.equal(data[rows], torch.from_numpy(x.astype(np.float32))[rows])
    x[[700, 701], 1] = np.nan
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(DataError, match=r"in 2 row\(s\); the first is row 700"):
        flow3 = ff.Flow(ff.distributions.StandardNormal((3,)), [T.LULinear(3)])
        ff.fit(flow3, MemmapData(tmp_path / "bad.npy"), steps=1, progress=False)
    with pytest.raises(ff.ShapeError, match=r"rows of shape \(3,\)"):
        ff.fit(spline_flow(), data, steps=1, progress=False)


def test_single_process_world_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = setup()
    assert world == World() and not world.active
    flow = spline_flow()
    call = replicate(flow, world)
    x = torch.zeros(3, 2)
    assert torch.equal(call(ff.train.nll, x), ff.train.nll(flow, x))

    class TwoRanks(World):  # only as far as fit's checks, before any collective of the step
        def all_gather(self, obj):
            return [obj] * self.size

    monkeypatch.setattr("flowforge.train.ml.setup", lambda device: TwoRanks(rank=0, size=2))
    with pytest.raises(ValueError, match="divisible by the 2 processes"):
        ff.fit(spline_flow(), generate("moons", 100), steps=1, batch_size=33, progress=False)
