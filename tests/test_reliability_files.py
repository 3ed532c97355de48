"""Untrusted model files: every crafted file is refused before anything runs or is allocated.

``flowforge.load`` must never unpickle, must validate ``config.json`` against the spec schema
before building anything, must refuse configs that name arbitrary Python objects or reach
outside the model folder, and must bound what a file can make it allocate (the safetensors
header and the architecture both). Each case below writes one malicious or broken model
folder and checks the error; ``pickle``, ``torch.load`` and ``os.system`` are booby-trapped
throughout. The list of refused files is printed at the end of the module.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import resource
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import flowforge as ff
from flowforge import transforms as T
from flowforge.cli import main
from flowforge.io import ModelFileError

from ._report import write_summary

REFUSED: list[str] = []


@pytest.fixture(autouse=True, scope="module")
def _list_refused(pytestconfig):
    yield
    if REFUSED:
        lines = [f"malicious or broken model files refused: {len(REFUSED)}"]
        write_summary(pytestconfig, lines + [f"  {name}" for name in REFUSED])


# torch imports its compiler stack lazily, and that import subclasses pickle.Unpickler: done under the
# traps below it would fail and leave a half-initialised torch._dynamo for every later test.
importlib.import_module("torch._dynamo")


@pytest.fixture(autouse=True)
def _booby_traps(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("flowforge.load unpickled or executed something")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(os, "system", forbidden)


def _model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    flow = ff.Flow(
        ff.distributions.StandardNormal((2,)), [T.LULinear(2), T.RationalQuadraticSpline(2, bins=4)]
    )
    return ff.save(flow, tmp_path / "model")


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _write_config(path: Path, cfg: dict) -> None:
    (path / "config.json").write_text(json.dumps(cfg))


def _write_weights(path: Path, blob: bytes) -> None:
    # An attacker controls both files: the checksum and size in the config always match.
    (path / "model.safetensors").write_bytes(blob)
    cfg = _config(path)
    cfg["weights_sha256"], cfg["weights_bytes"] = hashlib.sha256(blob).hexdigest(), len(blob)
    _write_config(path, cfg)


def _header(entries: dict) -> bytes:
    text = json.dumps(entries).encode()
    return struct.pack("<Q", len(text)) + text


def _edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        cfg = _config(path)
        fn(cfg)
        _write_config(path, cfg)

    return apply


def _layer(spec: dict) -> Callable[[dict], None]:
    return lambda c: c["flow"]["transforms"].append(spec)


def _nested_json(path: Path) -> None:
    (path / "config.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)


def _pickled_config(path: Path) -> None:
    (path / "config.json").write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n" + b"(S'echo owned'\ntR.")


def _pickled_weights(path: Path) -> None:
    _write_weights(path, b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00cos\nsystem\n(S'echo owned'\ntR.")


def _symlinked_weights(path: Path) -> None:
    (path / "model.safetensors").unlink()
    (path / "model.safetensors").symlink_to("/etc/passwd")


def _huge_architecture(path: Path) -> None:
    # AffineCoupling cannot be built on the meta device (its mask needs real values), so this
    # would allocate 40 GB before any shape check without the allocation cap.
    cfg = _config(path)
    cfg["flow"]["transforms"] = [{"type": "AffineCoupling", "features": 2, "hidden": [100_000, 100_000]}]
    _write_config(path, cfg)


CASES: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "layer named os.system": (
        _edit(_layer({"type": "os.system", "command": "echo"})),
        ff.SpecError,
        "unknown layer",
    ),
    "base named builtins.eval": (
        _edit(lambda c: c["flow"].update(base={"type": "builtins.eval", "source": "1"})),
        ff.SpecError,
        "unknown base distribution",
    ),
    "__import__ nested in a Compose": (
        _edit(_layer({"type": "Compose", "transforms": [{"type": "__import__", "name": "os"}]})),
        ff.SpecError,
        r"transforms\[2\]\.transforms\[0\]: unknown layer",
    ),
    "transformer named subprocess.Popen": (
        _edit(
            _layer({"type": "Elementwise", "features": 2, "transformer": {"transformer": "subprocess.Popen"}})
        ),
        ff.SpecError,
        "unknown transformer",
    ),
    "dotted module path as a layer": (
        _edit(_layer({"type": "flowforge.io.os.system"})),
        ff.SpecError,
        "unknown layer",
    ),
    "path traversal: weights_file=../../etc/passwd": (
        _edit(lambda c: c.update(weights_file="../../etc/passwd")),
        ff.SpecError,
        "Extra inputs are not permitted",
    ),
    "path traversal: path argument on a layer": (
        _edit(lambda c: c["flow"]["transforms"][0].update(path="../../etc/passwd")),
        ff.SpecError,
        "unknown argument of LULinear 'path'",
    ),
    "format pickle": (_edit(lambda c: c.update(format="pickle")), ff.SpecError, "format"),
    "dtype object": (_edit(lambda c: c.update(dtype="object")), ff.SpecError, "dtype"),
    "wrong argument type": (
        _edit(lambda c: c["flow"]["transforms"][0].update(features="two")),
        ff.SpecError,
        "not a valid LULinear argument",
    ),
    "negative size": (
        _edit(lambda c: c["flow"]["transforms"][0].update(features=-2)),
        ff.SpecError,
        "features must be a positive",
    ),
    "newer format version": (
        _edit(lambda c: c.update(version=99)),
        ModelFileError,
        "newer than this flowforge",
    ),
    "config nested 100,000 deep": (_nested_json, ModelFileError, "not valid JSON"),
    "pickle posing as config.json": (_pickled_config, ModelFileError, "not valid JSON"),
    "config over 16 MiB": (
        lambda p: (p / "config.json").write_text(" " * (17 * 2**20) + "{}"),
        ModelFileError,
        "is refused",
    ),
    "pickle posing as model.safetensors": (_pickled_weights, ModelFileError, "header length"),
    "weights symlinked to /etc/passwd": (
        _symlinked_weights,
        ModelFileError,
        "truncated or replaced|checksum",
    ),
    "safetensors header length 2^40": (
        lambda p: _write_weights(p, struct.pack("<Q", 2**40) + b"{}"),
        ModelFileError,
        "header length",
    ),
    "header tensor of 2^40 elements": (
        lambda p: _write_weights(
            p, _header({"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}})
        ),
        ModelFileError,
        "points outside the file",
    ),
    "header offsets overlapping the header": (
        lambda p: _write_weights(
            p, _header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}) + bytes(16)
        ),
        ModelFileError,
        "malformed",
    ),
    "header nested 50,000 deep": (
        lambda p: _write_weights(p, struct.pack("<Q", 100_000) + b"[" * 50_000 + b"]" * 50_000),
        ModelFileError,
        "unreadable safetensors header",
    ),
    "architecture of 40 GB": (_huge_architecture, ModelFileError, "would allocate far more"),
    "weights of another architecture": (
        lambda p: _write_weights(
            p, _header({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}) + bytes(4)
        ),
        ModelFileError,
        "missing keys",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malicious_model_files_are_refused(tmp_path, name):
    make, error, message = CASES[name]
    path = _model(tmp_path)
    make(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        ff.load(path)
    # Refused quickly and without a large allocation (ru_maxrss is in KiB on Linux).
    assert time.perf_counter() - start < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 512 * 1024
    REFUSED.append(name)


def test_metadata_is_inert_and_a_good_model_still_loads(tmp_path):
    path = _model(tmp_path)
    cfg = _config(path)
    cfg["metadata"] = {"type": "os.system", "command": "echo owned", "__reduce__": ["os.system", "echo"]}
    _write_config(path, cfg)
    flow = ff.load(path)  # metadata is stored, never interpreted
    assert flow.saved_config["metadata"]["type"] == "os.system"
    assert bool(torch.isfinite(flow.log_prob(torch.zeros(3, 2))).all())


@pytest.mark.parametrize("name", ["layer named os.system", "pickle posing as model.safetensors"])
def test_the_command_line_refuses_them_with_exit_2(tmp_path, capsys, name):
    make, _, _ = CASES[name]
    path = _model(tmp_path)
    make(path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(path), "-n", "3", "-o", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()
