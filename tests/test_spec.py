"""Constructor recording: the basis of saving any flow built from library classes."""

import pytest

import flowforge as ff
from flowforge import transforms as T
from flowforge.spec import to_spec


def test_nested_spec_is_plain_data():
    t = T.Compose(T.LULinear(3), T.Inverse(T.Sigmoid()), T.Elementwise(T.transformers.AffineTransformer(), 3))
    spec = to_spec(t)
    assert spec["type"] == "Compose"
    assert spec["transforms"][0] == {"type": "LULinear", "features": 3}
    assert spec["transforms"][1] == {"type": "Inverse", "transform": {"type": "Sigmoid"}}
    assert spec["transforms"][2]["transformer"] == {
        "transformer": "AffineTransformer",
        "scale_bound": 3.0,
        "shift_first": False,
    }


def test_outermost_constructor_is_recorded():
    spec = to_spec(T.RationalQuadraticSpline(2, bins=4, bound=2.0))
    assert spec == {"type": "RationalQuadraticSpline", "features": 2, "bins": 4, "bound": 2.0}


def test_unsaveable_argument_is_named():
    class Custom(T.Transform):
        def __init__(self, net):
            super().__init__()
            self.net = net

    with pytest.raises(ff.SpecError, match=r"Custom\.net.*Linear"):
        import torch

        to_spec(Custom(torch.nn.Linear(2, 2)))
