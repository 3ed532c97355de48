"""Bad inputs: data files, in-memory data, specs and targets get a clear error or a documented behaviour.

Every case must end in one of two ways: a flowforge error (``DataError``, ``ShapeError``,
``SpecError``, ``TargetError``, ``TrainingDivergedError``, or a ``ValueError`` for a bad option)
whose message says what was wrong, or a working result whose behaviour is documented (a
constant column keeps scale 1; a NaN or infinite target value is excluded and counted). Never a
traceback from inside torch, numpy or csv, and never a silently wrong model. Hypothesis drives
the generated cases with ``derandomize=True`` (the same examples every run); the counts are
printed at the end of the module.
"""

from __future__ import annotations

import collections
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowforge as ff
from flowforge import transforms as T
from flowforge.datasets import DataError, load_file
from flowforge.registry import registry
from flowforge.train import TargetError, TrainingDivergedError

from ._report import write_summary

TRIED: collections.Counter = collections.Counter()
BUILT: collections.Counter = collections.Counter()  # generated cases that were valid and worked
EXPECTED = (DataError, ff.ShapeError, ff.SpecError, TargetError, TrainingDivergedError)
SETTINGS = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(autouse=True, scope="module")
def _print_counts(pytestconfig):
    yield
    if TRIED:  # the count of cases tried, printed whatever the capture setting
        head = (
            f"bad inputs tried: {sum(TRIED.values())}, every one a clear error or a documented behaviour "
            f"({BUILT['spec']} of the generated layer specs were valid and built a working flow)"
        )
        write_summary(pytestconfig, [head] + [f"  {kind:<34} {n}" for kind, n in sorted(TRIED.items())])


def _flow(d: int = 2) -> ff.Flow:
    torch.manual_seed(0)
    return ff.Flow(
        ff.distributions.StandardNormal((d,)), [T.LULinear(d), T.RationalQuadraticSpline(d, bins=4)]
    )


# -- data files ----------------------------------------------------------------------------------
CSV_ALPHABET = [*'0123456789.,-+eE \n\t"\r_x', "nan", "inf", "\ufeff", "\x00", "1e30", "1e39"]


@SETTINGS
@given(st.lists(st.sampled_from(CSV_ALPHABET), max_size=40).map("".join))
def test_csv_text_loads_finite_rows_or_says_why(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_text(text)
    TRIED["data file (generated CSV)"] += 1
    try:
        x = load_file(path, features=2)
    except DataError as e:
        assert str(path) in str(e)
        return
    assert x.dtype == torch.float32 and x.shape[1] == 2 and x.shape[0] >= 1
    assert bool(torch.isfinite(x).all())


def _valid_numpy() -> tuple[bytes, bytes]:
    a, z = io.BytesIO(), io.BytesIO()
    np.save(a, np.arange(10.0).reshape(5, 2))
    np.savez(z, a=np.arange(10.0).reshape(5, 2))
    return a.getvalue(), z.getvalue()


@SETTINGS
@given(st.data())
def test_damaged_numpy_files_raise_data_error(tmp_path_factory, data):
    npy, npz = _valid_numpy()
    folder = tmp_path_factory.mktemp("npy")
    for name, good in (("a.npy", npy), ("a.npz", npz)):
        kind = data.draw(st.sampled_from(["flip", "truncate", "random"]))
        if kind == "flip":
            i = data.draw(st.integers(0, len(good) - 1))
            blob = good[:i] + bytes([data.draw(st.integers(0, 255))]) + good[i + 1 :]
        elif kind == "truncate":
            blob = good[: data.draw(st.integers(0, len(good) - 1))]
        else:
            blob = data.draw(st.binary(max_size=300))
        (folder / name).write_bytes(blob)
        TRIED["data file (damaged .npy/.npz)"] += 1
        try:
            x = load_file(folder / name)
        except DataError:
            continue
        assert bool(torch.isfinite(x).all()) and x.dim() == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "is empty"),
        ("blank.csv", "\n \n", "is empty"),
        ("header-only.csv", "x,y\n", "no data rows"),
        ("ragged.csv", "1,2\n3\n", "ragged: line 2"),
        ("text.csv", "1,2\n3,abc\n", "'abc' is not a number"),
        ("nan.csv", "1,2\nnan,3\n", "row 1, column 0"),
        ("inf.csv", "1,2\n3,-inf\n", "row 1, column 1"),
        ("columns.csv", "1,2,3\n4,5,6\n", r"rows of shape \(3,\); the model expects \(2,\)"),
        ("overflow.csv", "1,2\n1e39,1\n", "beyond the range of torch.float32"),
        ("quoted-newline.csv", '1,"2\n3",4\n', "quoted field spanning lines"),
        ("long-field.csv", "1," + "2" * 200_000 + "\n", "field larger than field limit"),
        ("binary.csv", b"\xff\xfe\x00\x81", "not a text file"),
    ],
)
def test_bad_data_files_are_named_and_explained(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    TRIED["data file (named case)"] += 1
    with pytest.raises(DataError, match=message):
        load_file(path, features=2)


def test_spreadsheet_byte_order_mark_and_complex_arrays(tmp_path):
    (tmp_path / "bom.csv").write_text("\ufeffx,y\n1,2\n3,4\n")
    assert load_file(tmp_path / "bom.csv").tolist() == [[1, 2], [3, 4]]
    np.save(tmp_path / "c.npy", np.ones((3, 2), dtype=np.complex64))
    with pytest.raises(DataError, match="complex"):
        load_file(tmp_path / "c.npy")
    TRIED["data file (named case)"] += 2


# -- in-memory data given to fit -------------------------------------------------------------------
@SETTINGS
@given(st.integers(0, 49), st.integers(0, 1), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_data_names_the_first_bad_cell(row, col, value):
    data = torch.randn(50, 2)
    data[row, col] = value
    TRIED["in-memory data (NaN/inf cell)"] += 1
    with pytest.raises(DataError, match=rf"row {row}, column {col}"):
        ff.fit(_flow(), data, steps=1, progress=False)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (torch.randn(0, 2), DataError, "no rows"),
        (torch.randn(1, 2), DataError, "cannot be split"),
        (torch.randn(30, 3), ff.ShapeError, r"\(n, 2\).*\(30, 3\)"),
        (torch.randn(30), ff.ShapeError, r"\(n, 2\)"),
        ([[1.0, 2.0], [3.0]], DataError, "numeric array"),
        ([["a", "b"], ["c", "d"]], DataError, "numeric array"),
        (None, DataError, "numeric array"),
        (torch.ones(10, 2, dtype=torch.complex64), DataError, "must hold numbers"),
    ],
    ids=["empty", "one-row", "columns", "flat", "ragged", "strings", "none", "complex"],
)
def test_bad_in_memory_data(data, error, message):
    TRIED["in-memory data (named case)"] += 1
    with pytest.raises(error, match=message):
        ff.fit(_flow(), data, steps=1, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"batch_size": 0}, "batch_size"), ({"lr": math.nan}, "lr"), ({"lr": -1.0}, "lr")],
)
def test_bad_training_options_are_refused_before_torch_sees_them(kwargs, message):
    TRIED["training option"] += 1
    with pytest.raises(ValueError, match=message):
        ff.fit(_flow(), torch.randn(20, 2), steps=1, progress=False, **kwargs)


def test_huge_values_and_constant_columns_give_a_finite_model():
    torch.manual_seed(0)
    huge = torch.randn(300, 2) * 1e30  # standardised in float64: no overflow in the layers
    flow = _flow()
    history = ff.fit(flow, huge, steps=20, progress=False)
    assert history.summary["rollbacks"] == 0
    lp = flow.log_prob(huge[:20]).detach()
    # Raw units: log-densities near -2 log(1e30) per point, finite.
    assert bool(torch.isfinite(lp).all()) and -150 < float(lp.mean()) < -130
    constant = torch.randn(300, 2)
    constant[:, 1] = 1e30  # zero variance in a column of huge values
    flow = _flow()
    history = ff.fit(flow, constant, steps=20, progress=False)
    std = flow.transform.transforms[-1]
    assert history.events[0]["kind"] == "constant_features" and "[1]" in history.events[0]["message"]
    assert float(std.std[1]) == 1.0 and bool(torch.isfinite(flow.log_prob(constant[:5])).all())
    TRIED["in-memory data (named case)"] += 2


# -- specs -------------------------------------------------------------------------------------------
VALUES = st.one_of(
    st.integers(-3, 6),
    st.sampled_from(
        [0, -1, 10**12, 2**70, 1.5, -0.5, math.nan, math.inf, "two", "", None, True, [], [2], [-1], [2, 2]]
    ),
    st.sampled_from(
        [{}, {"type": "os.system"}, {"type": "LULinear", "features": 2}, {"transformer": "Popen"}, "../x"]
    ),
)
ARGUMENTS = ["features", "bins", "bound", "hidden", "shape", "transforms", "kind", "tol", "max_iter"]
ARGUMENTS += ["negative_slope", "reflections", "transformer", "context_features", "mask", "evil"]


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from([*sorted(registry().transforms), "os.system", "builtins.eval", "", "Flow"]),
    st.dictionaries(st.sampled_from(ARGUMENTS), VALUES, max_size=3),
)
def test_generated_layer_specs_build_or_raise_spec_error(name, args):
    spec = {"base": {"type": "StandardNormal", "shape": [2]}, "transforms": [{"type": name, **args}]}
    TRIED["spec (generated layer)"] += 1
    try:
        flow = ff.build(spec)
    except ff.SpecError as e:
        assert "spec" in str(e)
        return
    try:
        x = flow.sample((3,))
    except ff.FlowforgeError:  # e.g. an event shape that does not fit the base: said clearly
        return
    assert x.shape[0] == 3
    BUILT["spec"] += 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("base: {type: StandardNormal, shape: [2]}\ntransforms: [{type: NoSuchLayer}]", "unknown layer"),
        ("base: {type: StandardNormal, shape: [2]}\ntransforms: [{type: LULinear, features: x}]", "valid"),
        (
            "base: {type: StandardNormal, shape: [2]}\ntransforms: [{type: LULinear, features: -2}]",
            "positive",
        ),
        ("base: {type: StandardNormal, shape: [-2]}\ntransforms: []", "spec.base"),
        (
            "base: {type: StandardNormal, shape: [2]}\ntransforms: &t [{type: Compose, transforms: *t}]",
            "itself",
        ),
        ("a: &a [*a]", "either 'model'"),
        ("base: {type: StandardNormal, shape: [2]}\ntransforms: {type: LULinear}", "must be a list"),
        ("[1, 2", "neither valid JSON nor valid YAML"),
        ("!!python/object/apply:os.system ['echo']", "neither valid JSON nor valid YAML"),
        ('{"model": "RealNVP", "features": -3}', "RealNVP"),
        ('{"model": "RealNVP", "features": 2, "transforms": "many"}', "valid"),
    ],
    ids=[
        "unknown",
        "wrong-type",
        "negative",
        "negative-base",
        "cycle",
        "self-alias",
        "not-list",
        "broken",
        "yaml-object",
        "model-negative",
        "model-type",
    ],
)
def test_bad_specs_are_refused_with_the_path(spec, message):
    TRIED["spec (named case)"] += 1
    with pytest.raises(ff.SpecError, match=message):
        ff.build(spec)


def test_billion_laughs_spec_is_refused():
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    text = (
        "\n".join(lines)
        + "\nbase: {type: StandardNormal, shape: [2]}\ntransforms: [{type: Compose, transforms: *a7}]"
    )
    TRIED["spec (named case)"] += 1
    with pytest.raises(ff.SpecError):
        ff.build(text)


# -- targets ---------------------------------------------------------------------------------------------
def _gauss(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x * x).sum(-1)


TARGETS = {
    "raises": (lambda x: {}["missing"], TargetError, "raised KeyError"),
    "raises-memory": (lambda x: (_ for _ in ()).throw(MemoryError("oom")), TargetError, "MemoryError"),
    "returns-list": (lambda x: _gauss(x).tolist(), TargetError, "returned a list"),
    "returns-none": (lambda x: None, TargetError, "returned a NoneType"),
    "returns-numpy": (lambda x: _gauss(x).detach().numpy(), TargetError, "returned a ndarray"),
    "shape-scalar": (lambda x: _gauss(x).sum(), ff.ShapeError, r"returned shape \(\)"),
    "shape-n1": (lambda x: _gauss(x)[:, None], ff.ShapeError, "drop the trailing dimension"),
    "shape-n2": (lambda x: x, ff.ShapeError, r"returned shape \(16, 2\)"),
    "dtype-bool": (lambda x: _gauss(x) > -1, TargetError, "dtype torch.bool"),
    "dtype-int": (lambda x: _gauss(x).long(), TargetError, "dtype torch.int64"),
    "dtype-complex": (lambda x: _gauss(x).to(torch.complex64), TargetError, "complex"),
    "all-nan": (lambda x: _gauss(x) * math.nan, TrainingDivergedError, "16 of the samples had a NaN"),
    "all-minus-inf": (lambda x: _gauss(x) - math.inf, TrainingDivergedError, "NaN or infinite target"),
    "all-plus-inf": (lambda x: _gauss(x) + math.inf, TrainingDivergedError, "NaN or infinite target"),
    "overflow": (lambda x: _gauss(x) * 1e38, TrainingDivergedError, "the loss is inf"),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_broken_targets_get_a_clear_error(name):
    fn, error, message = TARGETS[name]
    TRIED["target (broken)"] += 1
    with pytest.raises(error, match=message):
        ff.fit_vi(_flow(), fn, steps=8, samples=16, progress=False, max_rollbacks=2)


@pytest.mark.parametrize("value", [math.nan, -math.inf, math.inf])
def test_partly_undefined_targets_are_excluded_and_counted(value):
    def target(x):
        lp = _gauss(x)
        return torch.where(x[:, 0] > 1.0, torch.full_like(lp, value), lp)

    TRIED["target (partly non-finite)"] += 1
    flow = _flow()
    h = ff.fit_vi(flow, target, steps=30, samples=64, progress=False)
    assert h.summary["nonfinite_total"] > 0 and h.summary["rollbacks"] == 0
    assert all(math.isfinite(v) for v in h["loss"]) and all(
        bool(torch.isfinite(p).all()) for p in flow.parameters()
    )


def test_a_target_without_gradients_is_warned_about():
    TRIED["target (detached)"] += 1
    with pytest.warns(UserWarning, match="do not depend on the samples through autograd"):
        ff.fit_vi(_flow(), lambda x: _gauss(x).detach(), steps=2, samples=16, progress=False)
