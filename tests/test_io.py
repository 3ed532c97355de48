"""Saved models (save/load/build) and users' data files: round trips and refusals."""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge as ff
from flowforge import models
from flowforge import transforms as T
from flowforge.datasets import DataError, load_file
from flowforge.io import ModelFileError

from .cases import all_cases


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _same_log_prob(a: ff.Flow, b: ff.Flow, x: torch.Tensor, context=None) -> None:
    with torch.no_grad():
        assert torch.equal(a.log_prob(x, context), b.log_prob(x, context))


def _case_params():
    for name, cases in sorted(all_cases().items()):
        for case in cases:
            yield pytest.param(case, id=f"{name}-{case.id}")


@pytest.mark.parametrize("case", list(_case_params()))
def test_every_layer_round_trips(case, tmp_path):
    """Every exported transform (through its generic-check cases), saved and loaded in a flow."""
    torch.manual_seed(0)
    t = case.make().double()
    if case.perturb:
        _perturb(t, case.perturb)
    if case.prepare is not None:
        case.prepare(t)
    flow = ff.Flow(ff.distributions.StandardNormal(case.event_shape), [t]).double().eval()
    context = torch.randn(4, case.context, dtype=torch.float64) if case.context else None
    with torch.no_grad():
        x = flow(case.inputs((4, *case.event_shape)), context)[0]
    loaded = ff.load(ff.save(flow, tmp_path / "m"))
    assert loaded.saved_config["dtype"] == "float64"
    _same_log_prob(flow, loaded, x, context)


def _model_args(builder) -> dict:
    params = inspect.signature(builder).parameters
    if "features" in params:
        return {"features": 3}
    if "shape" in params:
        return {"shape": (3, 8, 8)}
    raise AssertionError(f"{builder.__name__} takes neither features= nor shape=")


@pytest.mark.parametrize("name", sorted(models.__all__))
def test_every_model_round_trips(name, tmp_path):
    torch.manual_seed(0)
    builder = getattr(models, name)
    flow = builder(**_model_args(builder))
    _perturb(flow, 0.05)
    flow.eval()
    x = flow.sample((4,))
    loaded = ff.load(ff.save(flow, tmp_path / name))
    _same_log_prob(flow, loaded, x)
    # The spec alone rebuilds the same architecture.
    assert ff.build(json.loads((tmp_path / name / "config.json").read_text())).state_dict().keys() == (
        flow.state_dict().keys()
    )


def _saved(tmp_path: Path) -> tuple[ff.Flow, Path]:
    torch.manual_seed(0)
    flow = ff.Flow(
        ff.distributions.StandardNormal((2,)),
        [T.LULinear(2), T.RationalQuadraticSpline(2, bins=4), T.ActNorm(2)],
    )
    ff.fit(flow, torch.randn(300, 2) * 5 + 1, steps=20, progress=False)
    return flow, ff.save(flow, tmp_path / "model", metadata={"note": "test"})


def test_fitted_flow_keeps_standardizer_and_metadata(tmp_path):
    flow, path = _saved(tmp_path)
    loaded = ff.load(path)
    x = torch.randn(10, 2) * 5
    _same_log_prob(flow, loaded, x)
    cfg = loaded.saved_config
    assert cfg["metadata"] == {"note": "test"} and cfg["standardizer"]["index"] == 3
    assert cfg["flow"]["transforms"][-1] == {"type": "Standardize", "features": [2]}


def test_load_never_unpickles(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("load unpickled something")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    ff.load(path)


def _rewrite_weights(path: Path, blob: bytes) -> None:
    (path / "model.safetensors").write_bytes(blob)
    cfg = json.loads((path / "config.json").read_text())
    cfg["weights_sha256"], cfg["weights_bytes"] = hashlib.sha256(blob).hexdigest(), len(blob)
    (path / "config.json").write_text(json.dumps(cfg))


def test_corrupt_weights_are_refused(tmp_path):
    from safetensors.torch import save as st_save

    flow, path = _saved(tmp_path)
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-10])
    with pytest.raises(ModelFileError, match="truncated"):
        ff.load(path)
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ModelFileError, match="checksum"):
        ff.load(path)
    state = {k: v.clone() for k, v in flow.state_dict().items()}
    key = next(k for k in state if k.endswith("upper"))
    _rewrite_weights(path, st_save({**state, key: torch.zeros(3, 3)}))
    with pytest.raises(ModelFileError, match=rf"{key} has shape \(3, 3\).*needs \(2, 2\)"):
        ff.load(path)
    nan = state[key].clone()
    nan[0, 0] = float("nan")
    _rewrite_weights(path, st_save({**state, key: nan}))
    with pytest.raises(ModelFileError, match=rf"{key} hold NaN or infinite values"):
        ff.load(path)
    del state[key]
    _rewrite_weights(path, st_save(state))
    with pytest.raises(ModelFileError, match="missing keys"):
        ff.load(path)
    # A header claiming 2^40 bytes is refused before anything is allocated.
    _rewrite_weights(path, struct.pack("<Q", 2**40) + good[8:])
    with pytest.raises(ModelFileError, match="header length"):
        ff.load(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        ff.load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["flow"]["transforms"].append({"type": "os.system", "command": "echo"}), "unknown layer"),
        (lambda c: c["flow"].update(base={"type": "builtins.eval"}), "unknown base distribution"),
        (lambda c: c.update(weights_file="../../etc/passwd"), "Extra inputs are not permitted"),
        (lambda c: c["flow"]["transforms"][0].update(features="two"), "not a valid LULinear argument"),
        (lambda c: c["flow"]["transforms"][0].update(features=-2), "features must be a positive"),
        (lambda c: c["flow"]["transforms"][0].update(evil=1), "unknown argument of LULinear 'evil'"),
        (
            lambda c: c["flow"]["transforms"].append(
                {"type": "Elementwise", "features": 2, "transformer": {"transformer": "Popen"}}
            ),
            "unknown transformer",
        ),
        (lambda c: c.update(format="pickle"), "format"),
    ],
    ids=[
        "os.system",
        "eval",
        "path-traversal",
        "wrong-type",
        "negative-size",
        "extra-arg",
        "transformer",
        "format",
    ],
)
def test_malicious_or_broken_configs_are_refused(tmp_path, edit, message):
    _, path = _saved(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ff.SpecError, match=message):
        ff.load(path)


def test_build_forms_and_errors(tmp_path):
    explicit = {
        "base": {"type": "StandardNormal", "shape": [2]},
        "transforms": [{"type": "LULinear", "features": 2}, {"type": "LeakyReLU", "negative_slope": 0.3}],
    }
    assert ff.build(explicit).sample((5,)).shape == (5, 2)
    assert len(ff.build(json.dumps(explicit)).transform) == 2
    (tmp_path / "spec.yaml").write_text(
        "base: {type: StandardNormal, shape: [3]}\ntransforms: [{type: Tanh}]\n"
    )
    assert ff.build(tmp_path / "spec.yaml").event_shape == (3,)
    assert ff.build(str(tmp_path / "spec.yaml")).event_shape == (3,)
    with pytest.raises(
        ff.SpecError, match=r"unknown layer type 'LULinaer' \(did you mean 'LULinear'\?\); valid:"
    ):
        ff.build({**explicit, "transforms": [{"type": "LULinaer", "features": 2}]})
    with pytest.raises(ff.SpecError, match=r"unknown model 'NoSuchModel'"):
        ff.build({"model": "NoSuchModel", "features": 2})
    with pytest.raises(ff.SpecError, match="either 'model'"):
        ff.build({"layers": []})
    with pytest.raises(ff.SpecError, match="contains itself"):
        ff.build("base: {type: StandardNormal, shape: [2]}\ntransforms: &t [{type: Compose, transforms: *t}]")
    with pytest.raises(ff.SpecError, match="needs the argument 'features'"):
        ff.build({**explicit, "transforms": [{"type": "LULinear"}]})


# -- data files -------------------------------------------------------------------------------------
def test_data_files_load(tmp_path):
    (tmp_path / "a.csv").write_text("x, y\n1, 2\n\n3, 4\n")
    assert load_file(tmp_path / "a.csv").tolist() == [[1, 2], [3, 4]]
    np.save(tmp_path / "b.npy", np.arange(6.0))
    assert load_file(tmp_path / "b.npy").shape == (6, 1)
    np.savez(tmp_path / "c.npz", train=np.ones((4, 3)), test=np.zeros((2, 3)))
    assert load_file(tmp_path / "c.npz", key="test").shape == (2, 3)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "is empty"),
        ("ragged.csv", "1,2\n3\n", "ragged: line 2 has 1 field"),
        ("text.csv", "1,2\n3,abc\n", r"line 2, column 2: 'abc' is not a number"),
        ("nan.csv", "1,2\n3,nan\n", "row 1, column 1"),
        ("columns.csv", "1,2,3\n", r"rows of shape \(3,\); the model expects \(2,\)"),
        ("huge.csv", "1,2\n1e300,1\n", "beyond the range"),
        ("data.parquet", "x", "unknown suffix"),
        ("missing.csv", None, "no such data file"),
    ],
)
def test_bad_data_files_are_refused(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_file(tmp_path / name, features=2)


def test_numpy_files_with_objects_are_not_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="never"):
        load_file(tmp_path / "obj.npy")
    np.savez(tmp_path / "two.npz", a=np.ones(2), b=np.ones(2))
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; choose one with key="):
        load_file(tmp_path / "two.npz")


@pytest.mark.parametrize("name", ["MAF", "IAF", "NICE", "RealNVP", "NSF", "Glow"])
def test_student_t_base_option_builds_saves_and_validates(name, tmp_path):
    builder = getattr(models, name)
    torch.manual_seed(0)
    flow = builder(**_model_args(builder), base_df=7)
    assert isinstance(flow.base, ff.distributions.StudentT) and flow.base.df == 7.0
    x = flow.sample((4,))
    loaded = ff.load(ff.save(flow, tmp_path / name))
    assert isinstance(loaded.base, ff.distributions.StudentT) and loaded.base.df == 7.0
    _same_log_prob(flow, loaded, x)
    for bad in (0, -1.0, "5", True):
        with pytest.raises(ValueError, match="base_df must be a positive number"):
            builder(**_model_args(builder), base_df=bad)


def _as_version_1(node):
    """A spec as format version 1 wrote it: AffineCoupling without the arguments added since."""
    if isinstance(node, list):
        return [_as_version_1(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _as_version_1(v) for k, v in node.items()}
    if node.get("type") == "AffineCoupling":
        node.pop("shift_first", None)
        node.pop("scale_bound", None)
    return node


@pytest.mark.parametrize("builder", ["RealNVP", "Glow", "layers"])
def test_version_1_files_keep_the_affine_coupling_they_were_trained_with(builder, tmp_path):
    # Format version 1 recorded AffineCoupling without shift_first and, when left at its
    # default, without scale_bound (defaults then: False and 3).
    torch.manual_seed(0)
    was = {"shift_first": False, "scale_bound": 3.0}
    if builder == "RealNVP":
        old, x = models.RealNVP(3, transforms=2, hidden=(8,), **was), torch.randn(5, 3)
    elif builder == "Glow":
        old = models.Glow((1, 4, 4), levels=1, steps=1, hidden=(4,), **was)
        x = torch.rand(5, 1, 4, 4)
    else:
        layers = [T.AffineCoupling(3, hidden=(8,), **was), T.AffineCoupling(3, flip=True, **was)]
        old, x = ff.Flow(ff.distributions.StandardNormal((3,)), layers), torch.randn(5, 3)
    _perturb(old)
    path = ff.save(old, tmp_path / "m")
    cfg_path = path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["flow"] = _as_version_1(cfg["flow"])
    assert "shift_first" not in json.dumps(cfg["flow"])
    results = {}
    for version in (1, 2):
        cfg["version"] = version
        cfg_path.write_text(json.dumps(cfg))
        loaded = ff.load(path)
        with torch.no_grad():
            results[version] = loaded.log_prob(x)
        if version == 1:
            _same_log_prob(loaded, old.eval(), x)
        built = ff.build(cfg)  # a saved config given to build goes through the same upgrade
        kinds = {m.transformer.shift_first for m in built.modules() if isinstance(m, T.AffineCoupling)}
        assert (True in kinds) == (version == 2)
    # A version-2 file without the keys means today's defaults: another map on the same weights.
    assert not torch.allclose(results[1], results[2])
