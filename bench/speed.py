"""Training-step time, sampling throughput and peak training memory: flowforge against its peers (issue 9).

For every configuration ``d:hidden:batch`` and model (MAF, IAF, RealNVP, NSF; see
``bench/speed_models.py``), each library builds the same architecture and is timed on:

- one maximum-likelihood training step: ``-log_prob(x).mean()``, backward, Adam step;
- sampling: ``sample(n)`` without gradients, as samples per second;
- peak training memory: CUDA's peak allocated bytes over two training steps (after building the
  model and the batch), or on CPU the growth of the peak resident set size (``VmHWM``, reset
  through ``/proc/self/clear_refs``) over two steps, each library and model in a fresh
  subprocess so that no allocator cache from another model hides or adds memory.

The same steps are timed for the bare conditioner networks ("raw"): plain ``nn.Linear``/ReLU
stacks with the exact shapes of flowforge's conditioners (their inputs ask for gradients, as
inside a flow), forward + backward + Adam. ``model / raw`` is what a library adds over network
cost that no library can avoid. The libraries take turns over ``--rounds`` rounds (best round
kept), so that the load of a shared machine hits all of them alike.

Run ``python bench/speed.py --help``; ``--quick`` is a smoke run. With ``--device cuda`` times
are taken after ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_models import LIBRARIES, MODELS, Unavailable, build, raw_stack

CPU_CONFIGS = "2:64:512,64:64:512,8:64:1024,64:256:4096,784:1024:1024"
# The issue's peer configurations; 64:1024:65536 is about a TFLOP per MAF step: GPU only.
GPU_CONFIGS = "8:64:1024,64:256:4096,64:1024:65536,784:1024:1024"
# A peer's IAF density recomputes its network d times: minutes a step at these sizes on a CPU.
DEFAULT_SKIP_TRAIN = ",".join(
    f"{c}/IAF/{lib}" for c in ("64:256:4096", "64:1024:65536", "784:1024:1024") for lib in LIBRARIES[1:]
)


def parse_config(text: str) -> tuple[int, int, int]:
    try:
        d, h, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"a configuration is d:hidden:batch, e.g. 8:64:1024; got {text!r}") from None
    return d, h, b


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The clock of every timing: wall time, or this process's CPU time (see --clock).
CLOCK = time.perf_counter


class Raw(nn.Module):
    """The conditioner networks alone: one plain MLP per flowforge conditioner, same shapes."""

    def __init__(self, shapes: list[list[tuple[int, int]]]) -> None:
        super().__init__()
        nets = []
        for net in shapes:
            layers: list[nn.Module] = []
            for i, (a, b) in enumerate(net):
                layers += [nn.ReLU()] if i else []
                layers.append(nn.Linear(a, b))
            nets.append(nn.Sequential(*layers))
        self.nets = nn.ModuleList(nets)

    def loss(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return sum(net(x).mean() for net, x in zip(self.nets, inputs, strict=True))


OPTIMIZER = "default"  # set from --optimizer
COMPILED = "-compiled"  # suffix of the rows whose loss runs through torch.compile (--compile)


class Entry:
    """One timed thing (a library's model, or the raw networks) with its optimizer and batch."""

    def __init__(self, library: str, model: str, d: int, hidden: int, batch: int, device: torch.device):
        self.library, self.model = library, model
        base = library.removesuffix(COMPILED)
        gen = torch.Generator().manual_seed(0)
        if base == "raw":
            self.module = Raw(raw_stack(model, d, hidden)).to(device)
            self.inputs = [
                torch.randn(batch, net[0].in_features, generator=gen).to(device).requires_grad_()
                for net in self.module.nets
            ]
            self.loss = lambda: self.module.loss(self.inputs)
            self.sample = None
        else:
            torch.manual_seed(0)
            built = build(base, model, d, hidden)
            self.module = built.module.to(device)
            x = torch.randn(batch, d, generator=gen).to(device)
            self.loss = lambda: -built.log_prob(x).mean()
            self.sample = built.sample
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.train = True  # whether its training step is timed (see --skip-train)
        # The same update for every library; fused (one kernel for all tensors) is what flowforge.fit uses.
        self.opt = torch.optim.Adam(self.params, lr=1e-4, fused=OPTIMIZER == "fused" or None)
        if library.endswith(COMPILED):
            self._compile(base, device)

    def _compile(self, base: str, device: torch.device) -> None:
        """The loss through torch.compile: flowforge's via fit(compile=True)'s own wrapper (eager first
        call with validation, then compiled without), the others' and the raw networks' directly."""
        eager, self.sample = self.loss, None  # sampling stays eager: see the library's own row
        mode = "reduce-overhead" if device.type == "cuda" else None
        from flowforge.train.compiled import compiled_loss, own_code

        if base == "flowforge":
            step = compiled_loss(lambda x, c: eager(), device=device)
            self.loss = lambda: step(None, None)
        else:
            # Every entry's loss is the same lambda: without a code object of its own, entries after
            # dynamo's eighth ran eagerly (the compiled peer rows before 2026-12-03 evening).
            self.loss = torch.compile(own_code(eager), mode=mode, dynamic=False)
        start = time.perf_counter()
        try:
            for _ in range(2):  # flowforge's first call is eager, the second compiles
                self.loss().backward()
        except Exception as e:
            raise Unavailable(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]})") from None
        sync(device)
        self.compile_s = time.perf_counter() - start
        if base == "flowforge" and step.state != "compiled":
            raise Unavailable("torch.compile failed (see the warning)")

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()

    def time_steps(self, n: int, device: torch.device) -> float:
        sync(device)
        start = CLOCK()
        for _ in range(n):
            self.step()
        sync(device)
        return (CLOCK() - start) / n

    def time_sample(self, n: int, device: torch.device) -> float:
        self.module.eval()
        try:
            with torch.no_grad():
                sync(device)
                start = CLOCK()
                self.sample(n)
                sync(device)
                return CLOCK() - start
        finally:
            self.module.train()


def time_group(entries: list[Entry], args: argparse.Namespace, device: torch.device, batch: int) -> dict:
    """ms/step and samples/s of each entry, libraries taking turns, best of ``--rounds`` rounds."""
    out: dict[str, dict] = {e.library: {} for e in entries}
    trainers = [e for e in entries if e.train]
    probe = {}
    for e in trainers:
        e.time_steps(1, device)  # warm-up: Adam state, allocator, lazy inits
        probe[e.library] = e.time_steps(1, device)
    steps = {k: max(1, min(args.max_steps, int(args.round_seconds / v))) for k, v in probe.items()}
    best = dict(probe)
    for _ in range(args.rounds):
        for e in trainers:
            best[e.library] = min(best[e.library], e.time_steps(steps[e.library], device))
    for e in trainers:
        out[e.library].update(ms_per_step=best[e.library] * 1e3, steps_timed=steps[e.library])
    samplers = [e for e in entries if e.sample is not None]
    if not args.sample or not samplers:
        return out
    # One sample count for all: as large as the slowest sampler allows in about --sample-seconds.
    small = 16
    per = {e.library: e.time_sample(small, device) / small for e in samplers}
    n = max(small, min(args.sample_n or max(batch, 10_000), int(args.sample_seconds / max(per.values()))))
    sbest = {}
    for e in samplers:
        sbest[e.library] = math.inf if n > small else per[e.library] * small
    if n > small:
        for _ in range(args.rounds):
            for e in samplers:
                for _ in range(args.sample_calls):
                    sbest[e.library] = min(sbest[e.library], e.time_sample(n, device))
    for e in samplers:
        out[e.library].update(samples_per_s=n / sbest[e.library], samples_timed=n)
    return out


# -- memory ----------------------------------------------------------------------------------
def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def memory_child(spec: str) -> None:
    """In a fresh process: peak training memory of one library's model over two steps (prints JSON)."""
    library, model, config, device, threads = spec.split(",")
    torch.set_num_threads(int(threads))
    warnings.filterwarnings("ignore")
    d, h, b = parse_config(config)
    dev = torch.device(device)
    entry = Entry(library, model, d, h, b, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        entry.step()
        entry.step()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - before
    else:
        before = _rss_kb("VmRSS") * 1024
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        entry.step()
        entry.step()
        peak = _rss_kb("VmHWM") * 1024 - before
    print(json.dumps({"peak_mb": peak / 2**20}))


def measure_memory(library: str, model: str, config: str, device: str, threads: int) -> float | None:
    spec = ",".join([library, model, config, device, str(threads)])
    # A fixed mmap threshold turns off glibc's adaptive one, under which a freed large block may
    # stay in the heap and count towards the RSS: big tensors are then mapped and unmapped as
    # they live and die, and the peak RSS tracks the peak of live tensors (run-to-run spread of
    # 10-30 MB at 784:1024:1024 without it).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", spec],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        print(f"note: memory of {library} {model} {config} failed: {done.stderr.strip()[-300:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


# -- mixed precision -------------------------------------------------------------------------
def precision_check(args: argparse.Namespace) -> list[dict]:
    """Fit flowforge's MAF and RealNVP to moons in float32 and with bf16 conditioners; NLLs and time."""
    from flowforge import fit, models
    from flowforge.datasets import generate

    data = generate("moons", 4000, seed=0)
    rows = []
    for model in ("MAF", "RealNVP"):
        for precision in (None, "bf16"):
            torch.manual_seed(0)
            build = models.MAF if model == "MAF" else models.RealNVP
            flow = build(2, transforms=5 if model == "MAF" else 6, hidden=(64, 64))
            start = CLOCK()
            history = fit(
                flow,
                data,
                steps=args.precision_steps,
                batch_size=512,
                progress=False,
                seed=0,
                mixed_precision=precision,
            )
            seconds = CLOCK() - start
            rows.append(
                {
                    "model": model,
                    "precision": precision or "float32",
                    "val_nll": history["val_loss"][-1],
                    "ms_per_step": seconds / args.precision_steps * 1e3,
                }
            )
            print(
                f"  {model} {rows[-1]['precision']}: validation NLL {rows[-1]['val_nll']:.4f}, "
                f"{rows[-1]['ms_per_step']:.2f} ms/step (fit, incl. validation)",
                flush=True,
            )
    return rows


# -- reporting -------------------------------------------------------------------------------
def _fastest_peer(rows: list[dict], key: str, better: str) -> tuple[str, float] | None:
    """The fastest eager peer: flowforge's compiled row is compared with what the peers' users run."""
    peers = [
        (r["library"], r[key])
        for r in rows
        if not r["library"].startswith(("flowforge", "raw"))
        and not r["library"].endswith(COMPILED)
        and r.get(key)
    ]
    if not peers:
        return None
    pick = min if better == "low" else max
    return pick(peers, key=lambda kv: kv[1])


def table(config: str, rows: list[dict]) -> str:
    """One markdown table of a configuration: each model's libraries, then the raw networks."""
    lines = [
        f"#### d:hidden:batch = {config}",
        "",
        "| model | library | ms/step | / raw | / fastest peer | samples/s | / fastest peer | peak MB "
        "| params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(v: float | None, spec: str) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    for model in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == model]
        raw = next((r.get("ms_per_step") for r in sel if r["library"] == "raw"), None)
        step_peer = _fastest_peer(sel, "ms_per_step", "low")
        sample_peer = _fastest_peer(sel, "samples_per_s", "high")
        for r in sel:
            ours = r["library"].startswith("flowforge")
            ms, sps = r.get("ms_per_step"), r.get("samples_per_s")
            spec = ",.0f" if (sps or 0) >= 100 else ".3g"
            vs_step = ms / step_peer[1] if ours and ms and step_peer else None
            vs_sample = sps / sample_peer[1] if ours and sps and sample_peer else None
            over = ms / raw if ms and raw and r["library"] != "raw" else None  # eager raw for all
            lines.append(
                f"| {model} | {r['library']} | {fmt(ms, '.2f')} | {fmt(over, '.2f')} | "
                f"{fmt(vs_step, '.2f')} | {fmt(sps, spec)} | {fmt(vs_sample, '.2f')} | "
                f"{fmt(r.get('peak_mb'), ',.1f')} | {fmt(r.get('params'), ',')} |"
            )
    return "\n".join(lines)


def render(paths: list[str]) -> None:
    """Print saved results as the markdown of bench/README.md."""
    for path in paths:
        saved = json.loads(Path(path).read_text())
        meta, results = saved["meta"], saved["results"]
        print(f"Command: `{meta['command']}` ({meta['date']}; {meta['machine']['platform']}, ", end="")
        machine = meta["machine"]
        print(
            f"{machine['device']}, {machine['threads']} thread(s), {machine.get('clock', 'wall')} clock; "
            f"versions {meta['versions']})\n"
        )
        for note in meta.get("notes", []):
            print(f"- {note}")
        print()
        if meta.get("mixed_precision"):
            print("| model | conditioners | validation NLL | ms/step (fit) |\n| --- | --- | --- | --- |")
            for r in meta["mixed_precision"]:
                print(f"| {r['model']} | {r['precision']} | {r['val_nll']:.4f} | {r['ms_per_step']:.2f} |")
            print()
        for config in dict.fromkeys(r["config"] for r in results):
            print(table(config, [r for r in results if r["config"] == config]) + "\n")


def write(path: Path, meta: dict, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--configs", default=None, help=f"comma-separated d:hidden:batch (CPU default {CPU_CONFIGS})"
    )
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    p.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument(
        "--clock",
        choices=("auto", "wall", "cpu"),
        default="auto",
        help="wall: elapsed time; cpu: this process's CPU time, which other load on a shared machine\n"
        "does not inflate (auto: cpu on a CPU with --threads 1, else wall)",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best kept)")
    p.add_argument("--round-seconds", type=float, default=0.5, help="about this long per entry and round")
    p.add_argument("--max-steps", type=int, default=50, help="at most this many steps per round")
    p.add_argument(
        "--optimizer",
        choices=("default", "fused"),
        default="default",
        help="torch.optim.Adam's default per-tensor update, or fused=True (what flowforge.fit uses);\n"
        "every library and the raw networks get the same one (memory children use the default)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time every library's loss (and the raw networks) through torch.compile: '-compiled'\n"
        "rows, flowforge's through fit(compile=True)'s wrapper; compile seconds in the JSON",
    )
    p.add_argument("--no-sample", dest="sample", action="store_false", help="skip sampling")
    p.add_argument(
        "--sample-n", type=int, default=None, help="samples per call at most (default: max(batch, 10000))"
    )
    p.add_argument("--sample-seconds", type=float, default=1.0, help="the slowest sampler's time per call")
    p.add_argument(
        "--sample-calls",
        type=int,
        default=5,
        help="sampling calls per library and round (the best is kept: on a CPU the first touch of fresh "
        "allocations moved one call's time by 2-3x)",
    )
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak memory")
    p.add_argument(
        "--skip-train",
        default=None,
        help="comma-separated config/model/library patterns (fnmatch) whose training step is not timed\n"
        "(default: the peers' IAF training where d sequential network passes take minutes a step)",
    )
    p.add_argument("--json", default=None, help="results file (default bench/results/speed-<device>.json)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2:64:512 only, 2 rounds, short")
    p.add_argument("--render", nargs="+", metavar="JSON", help="print saved results; time nothing")
    p.add_argument(
        "--precision-check",
        action="store_true",
        help="also fit MAF and RealNVP on moons in float32 and with bf16 conditioners (NLL difference)",
    )
    p.add_argument("--precision-steps", type=int, default=500)
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.sample_calls < 1:
        p.error(f"--rounds and --sample-calls must be at least 1; got {args.rounds} and {args.sample_calls}")
    if args.quick:
        args.configs = args.configs or "2:64:512"
        args.rounds, args.round_seconds, args.sample_seconds, args.sample_calls = 2, 0.2, 0.3, 2
    if args.configs is None:
        args.configs = CPU_CONFIGS if args.device == "cpu" else GPU_CONFIGS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render:
        render(args.render)
        return 0
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    warnings.filterwarnings("ignore")  # peers' deprecation chatter
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    global CLOCK, OPTIMIZER
    OPTIMIZER = args.optimizer
    if args.clock == "auto":
        args.clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    if args.clock == "cpu" and device.type == "cuda":
        raise SystemExit("--clock cpu does not see GPU time; use --clock wall with --device cuda")
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    import flowforge

    versions = {"torch": torch.__version__, "flowforge": flowforge.__version__}
    for name in LIBRARIES[1:]:
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # not installed: its builder reports it
            versions[name] = None
    meta = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "args": vars(args),
        "versions": versions,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "clock": args.clock,
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "notes": [],
    }
    out = Path(args.json or f"bench/results/speed-{device.type}.json")
    skip = [s for s in (DEFAULT_SKIP_TRAIN if args.skip_train is None else args.skip_train).split(",") if s]
    libraries = [s for s in args.libraries.split(",") if s]
    results: list[dict] = []
    print(
        f"flowforge speed benchmark on {meta['machine']['device']}, {torch.get_num_threads()} thread(s), "
        f"{args.clock} clock"
    )
    for config in (s for s in args.configs.split(",") if s):
        d, h, b = parse_config(config)
        rows: list[dict] = []
        for model in (s for s in args.models.split(",") if s):
            entries = []
            plain = [*libraries, "raw"]
            for library in plain + ([name + COMPILED for name in plain] if args.compile else []):
                try:
                    entry = Entry(library, model, d, h, b, device)
                except Unavailable as e:
                    meta["notes"].append(f"{config} {model} {library}: {e}")
                    print(f"note: {library} {model}: {e}; skipped")
                    continue
                if any(fnmatch.fnmatch(f"{config}/{model}/{library}", pat) for pat in skip):
                    entry.train = False
                    meta["notes"].append(
                        f"{config} {model} {library}: training step not timed (--skip-train)"
                    )
                entries.append(entry)
            timed = time_group(entries, args, device, b)
            for e in entries:
                row = {"config": config, "model": model, "library": e.library, **timed[e.library]}
                row["params"] = sum(p.numel() for p in e.params)
                if hasattr(e, "compile_s"):
                    row["compile_s"] = round(e.compile_s, 1)
                if args.memory and e.train and not e.library.endswith(COMPILED):
                    row["peak_mb"] = measure_memory(
                        e.library, model, config, args.device, torch.get_num_threads()
                    )
                rows.append(row)
                print(
                    f"  {config} {model:7s} {e.library:9s} {row.get('ms_per_step', math.nan):9.2f} ms/step  "
                    f"{row.get('samples_per_s', math.nan):12,.0f} samples/s  "
                    f"{row.get('peak_mb') or math.nan:8.1f} MB",
                    flush=True,
                )
            del entries
            write(out, meta, [*results, *rows])
        results += rows
        print("\n" + table(config, rows) + "\n", flush=True)
    if args.precision_check:
        print("mixed precision: flowforge.fit on moons (4000 points), batch 512, seed 0")
        meta["mixed_precision"] = precision_check(args)
    write(out, meta, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
