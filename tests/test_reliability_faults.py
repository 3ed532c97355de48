"""Fault injection: kill -9 at seeded moments then ``--resume``; SIGINT; checkpoint writes that fail.

The kill trials run in one driver process that imports flowforge once and forks a fresh child
per training run (forking is far cheaper than starting Python and torch twenty times). Each
child runs the real command line, ``flowforge fit ... --resume``, and is killed with SIGKILL:
by the driver after a seeded random delay, by itself at a seeded step (inside the loss), or by
itself halfway through writing a seeded checkpoint. The same command is then re-run until it
completes, and its saved weights must equal, bit for bit, those of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import flowforge as ff
from flowforge import transforms as T
from flowforge.cli import main
from flowforge.datasets import generate
from flowforge.diagnostics.health import layer_health
from flowforge.train import CheckpointError, TrainingDivergedError, load_checkpoint
from flowforge.train.health import explain_nonfinite, rng_snapshot

SPEC = """
base: {type: StandardNormal, shape: [2]}
transforms:
  - {type: LULinear, features: 2}
  - {type: RationalQuadraticSpline, features: 2, bins: 4, bound: 4.0}
  - {type: LULinear, features: 2}
  - {type: RationalQuadraticSpline, features: 2, bins: 4, bound: 4.0}
"""

DRIVER = textwrap.dedent(
    """
    import io, json, os, random, signal, sys, time, traceback
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import load_file
    import flowforge.train.ml as ml
    from flowforge.cli import main
    from flowforge.train import load_checkpoint
    import flowforge.train.runs

    # Imported once here rather than in every forked child: Adam's first use imports torch._dynamo.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    root, spec, trials, steps, every = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), 60, 6

    def args(out):
        return ["fit", "--data", "moons", "--n", "300", "--steps", str(steps), "--batch-size", "32",
                "--checkpoint-every", str(every), "--model", spec, "--out", str(out), "--no-progress",
                "--no-plots", "--threads", "1", "--resume"]

    def start(out, kill_at_loss=None, kill_in_write=None, interrupt_at_loss=None):
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            sys.stdout = sys.stderr = open(out.parent / (out.name + ".log"), "a")
            if kill_at_loss is not None or interrupt_at_loss is not None:
                original, calls = ml.nll, [0]
                def nll(flow, x, context=None):
                    calls[0] += 1
                    if calls[0] == kill_at_loss:
                        os.kill(os.getpid(), signal.SIGKILL)
                    if calls[0] == interrupt_at_loss:
                        os.kill(os.getpid(), signal.SIGINT)
                    return original(flow, x, context)
                ml.nll = nll
            if kill_in_write is not None:
                save, writes = torch.save, [0]
                def torn_save(obj, f, *a, **k):
                    writes[0] += 1
                    if writes[0] != kill_in_write:
                        return save(obj, f, *a, **k)
                    buffer = io.BytesIO()
                    save(obj, buffer)
                    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                torch.save = torn_save
            main(args(out))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def wait(pid):
        _, status = os.waitpid(pid, 0)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def weights(out):
        return load_file(str(out / "model" / "model.safetensors"))

    t0 = time.time()
    reference = root / "reference"
    if wait(start(reference)) != 0:
        raise SystemExit("the uninterrupted run failed")
    duration = time.time() - t0
    ref = weights(reference)

    def step_of(out):
        state = load_checkpoint(out / "checkpoints")
        return None if state is None else int(state["step"])

    for seed in range(trials):
        rng = random.Random(seed)
        out = root / f"trial{seed}"
        mode = ["write", "step", "timer"][seed % 3]
        kills, notes = 0, []
        if mode == "write":
            # Halfway through a checkpoint write after the first (so a previous one exists).
            n = rng.randint(2, steps // every - 1)
            code = wait(start(out, kill_in_write=n))
            before = step_of(out)
            leftovers = [p.name for p in (out / "checkpoints").glob(".checkpoint-*.tmp")]
            notes.append({"write": n, "code": code, "checkpoint_step": before, "tmp": len(leftovers)})
            kills += code == -signal.SIGKILL
        elif mode == "step":
            for _ in range(rng.choice([1, 2])):  # sometimes the resumed run is killed again
                at = rng.randint(1, steps - 1)
                code = wait(start(out, kill_at_loss=at))
                notes.append({"loss_call": at, "code": code, "checkpoint_step": step_of(out)})
                kills += code == -signal.SIGKILL
        else:
            delay = rng.uniform(0.05, 0.9) * duration
            pid = start(out)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            code = wait(pid)
            notes.append({"delay_s": round(delay, 3), "code": code, "checkpoint_step": step_of(out)})
            kills += code == -signal.SIGKILL
        final = wait(start(out))
        same = final == 0 and all(torch.equal(ref[k], v) for k, v in weights(out).items())
        same = same and set(weights(out)) == set(ref)
        stale = [p.name for p in (out / "checkpoints").glob(".checkpoint-*.tmp")]
        print(json.dumps({"seed": seed, "mode": mode, "kills": kills, "events": notes,
                          "final_code": final, "identical": bool(same), "stale_tmp": len(stale)}), flush=True)

    # SIGINT from outside: a final checkpoint, exit code 130, then --resume completes identically.
    out = root / "sigint"
    pid = start(out, interrupt_at_loss=23)
    code = wait(pid)
    state = load_checkpoint(out / "checkpoints")
    final = wait(start(out))
    same = final == 0 and all(torch.equal(ref[k], v) for k, v in weights(out).items())
    print(json.dumps({"sigint_code": code, "sigint_step": None if state is None else int(state["step"]),
                      "finished": None if state is None else bool(state["finished"]),
                      "identical": bool(same)}), flush=True)
    """
)


@pytest.mark.timeout(300)
def test_kill_9_at_seeded_moments_then_resume_gives_identical_weights(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "driver.py").write_text(DRIVER)
    trials = 12
    proc = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "driver.py"),
            str(tmp_path),
            str(tmp_path / "spec.yaml"),
            str(trials),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    results, sigint = lines[:-1], lines[-1]
    assert len(results) == trials
    kills = sum(r["kills"] for r in results)
    identical = sum(r["identical"] for r in results)
    torn = [e for r in results if r["mode"] == "write" for e in r["events"]]
    print(
        f"\nkill -9 trials: {trials} ({kills} kills, {len(torn)} in the middle of a checkpoint write); "
        f"identical final weights after --resume: {identical}/{trials}; "
        f"SIGINT: exit {sigint['sigint_code']} at step {sigint['sigint_step']}, "
        f"identical after --resume: {sigint['identical']}"
    )
    for r in results:
        print(json.dumps(r))
    assert identical == trials, [r for r in results if not r["identical"]]
    assert kills >= 10
    for event in torn:
        # Killed mid-write: the torn temporary file stays, and the previous checkpoint is intact.
        assert event["code"] == -9 and event["tmp"] == 1
        assert event["checkpoint_step"] == 6 * (event["write"] - 1)
    assert all(r["stale_tmp"] == 0 for r in results), "the next successful write removes torn files"
    assert sigint["sigint_code"] == 130 and sigint["finished"] is False and sigint["sigint_step"] == 23
    assert sigint["identical"]


def _flow() -> ff.Flow:
    torch.manual_seed(0)
    ts: list = []
    for _ in range(2):
        ts += [T.LULinear(2), T.RationalQuadraticSpline(2, bins=4, bound=4.0)]
    return ff.Flow(ff.distributions.StandardNormal((2,)), ts)


def test_checkpoint_write_failing_midway_keeps_the_previous_one_and_resume_is_exact(tmp_path, monkeypatch):
    data = generate("moons", 300, seed=0)
    kwargs = dict(steps=30, batch_size=32, progress=False, checkpoint_every=5)
    reference = _flow()
    ff.fit(reference, data, **kwargs)

    real_save, calls = torch.save, [0]

    def failing_save(obj, f, *args, **kw):
        calls[0] += 1
        if calls[0] == 3:  # the third checkpoint (step 15): half written, then the disk is full
            f.write(b"\x80\x02partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match=r"step 15 .*No space left.*checkpoint of step 10 is intact"):
        ff.fit(_flow(), data, checkpoint_dir=tmp_path, **kwargs)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    resumed = _flow()
    ff.fit(resumed, data, checkpoint_dir=tmp_path, resume=True, **kwargs)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# -- injected numerical faults: the health monitor names the layer -------------------------------------
class _NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


class _PoisonedGradient(T.Transform):
    """Exact values, NaN gradients: a fault only the backward pass can show."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.zeros(2))

    def _forward(self, x, context):
        return _NaNGradient.apply(x + self.shift), x.new_zeros(x.shape[:-1])

    def _inverse(self, y, context):
        return _NaNGradient.apply(y - self.shift), y.new_zeros(y.shape[:-1])


class _WrongLogDet(T.Transform):
    """A shift whose forward log-det is off by 0.1 and whose inverse misses the shift by 1e-3."""

    def _forward(self, x, context):
        return x + 1.0, x.new_full(x.shape[:-1], 0.1)

    def _inverse(self, y, context):
        return y - 1.0 + 1e-3, y.new_zeros(y.shape[:-1])


def test_training_names_the_layer_direction_and_batch_rows_of_the_first_non_finite_value():
    torch.manual_seed(0)
    data = torch.rand(200, 2) * 1.8 - 0.9
    data[6, 1] = 1.5  # outside tanh's range: the inverse of Tanh has log-det -inf there
    flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.Tanh()])
    with pytest.raises(TrainingDivergedError) as info:
        ff.fit(
            flow,
            data,
            steps=5,
            batch_size=200,
            val_fraction=0,
            standardize=False,
            progress=False,
            max_rollbacks=0,
        )
    message = str(info.value)
    assert "step 0" in message and "data row(s) [6]" in message
    assert re.search(
        r"log-det of Tanh \(transform\.transforms\.1\), inverse at batch row\(s\) \d+ of 200", message
    )

    # Forward direction (VI): Exp overflows for the larger base draws; the loss stays finite
    # (those samples are excluded as undefined) but the gradient does not.
    d = T.Diagonal(2)
    with torch.no_grad():
        d.params[:, 1] = 5.0
    flow = ff.Flow(ff.distributions.StandardNormal((2,)), [d, T.Exp()])

    def log_normal(x):
        return -(x.log() ** 2).sum(-1) - x.log().sum(-1)

    with pytest.raises(
        TrainingDivergedError, match=r"output of Exp \(transform\.transforms\.1\), forward at batch row"
    ):
        ff.fit_vi(flow, log_normal, steps=3, samples=32, progress=False, max_rollbacks=0)

    # Only the backward pass is non-finite: the layer whose backward produced it is named.
    flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), _PoisonedGradient(), T.Diagonal(2)])
    with pytest.raises(
        TrainingDivergedError, match=r"input gradient of _PoisonedGradient \(transform\.transforms\.1\)"
    ):
        ff.fit(flow, torch.randn(100, 2), steps=3, progress=False, max_rollbacks=0, standardize=False)


def test_the_replay_leaves_the_random_stream_as_it_was():
    # A rollback's diagnosis replays the step; the run must go on as if it had not.
    state = torch.get_rng_state()
    flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.Tanh()])
    x = torch.tensor([[0.1, 3.0]])
    rng = rng_snapshot()
    torch.randn(5)
    after = torch.get_rng_state()
    assert "Tanh" in explain_nonfinite(flow, lambda: -flow.log_prob(x).mean(), rng, gradients=False)
    assert torch.equal(torch.get_rng_state(), after)
    torch.set_rng_state(state)


def test_layer_health_points_at_the_faulty_layer(tmp_path, capsys):
    torch.manual_seed(0)
    flow = ff.Flow(ff.distributions.StandardNormal((2,)), [T.LULinear(2), _WrongLogDet(), T.Tanh()])
    report = layer_health(flow, flow.sample((64,)), jacobians=4)
    assert [h.passed for h in report.layers] == [True, False, True]
    bad = report.layers[1]
    assert bad.layer == "_WrongLogDet" and bad.roundtrip_error == pytest.approx(1e-3 / 2, rel=0.6)
    # Data points walk the inverses, whose log-det is right here: the forward's is caught by the
    # consistency check (inverse + forward = 0.1), not by the autograd check of the inverse.
    assert bad.logdet_consistency == pytest.approx(0.1) and bad.logdet_vs_autograd == pytest.approx(
        0, abs=1e-9
    )
    assert all(p.startswith("layer 1 (_WrongLogDet)") for p in report.problems)
    # flowforge check lists every layer of a saved model.
    good = ff.Flow(
        ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.RationalQuadraticSpline(2, bins=4)]
    )
    path = ff.save(good, tmp_path / "model")
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(path), "-n", "50", "--jacobians", "3", "--strict"])
    out = json.loads(capsys.readouterr().out)
    assert exit_info.value.code == 0 and out["passed"]
    assert [layer["layer"] for layer in out["layers"]] == ["LULinear", "RationalQuadraticSpline"]
    assert all(layer["roundtrip_error"] < 1e-6 for layer in out["layers"])
