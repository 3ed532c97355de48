"""The transform base class, composition and inversion.

Direction convention (the same in every flowforge layer and in all five seed texts):
``forward`` is the *generative* direction, base -> data (z -> x), and ``inverse`` is the
*normalizing* direction, data -> base (x -> z). A flow samples with the forwards and
evaluates densities with the inverses. No layer ever flips this.

One primitive per direction: a subclass implements ``_forward(x, context)`` and
``_inverse(y, context)``, each returning ``(output, ladj)`` where ``ladj`` is
log|det J| of *that* direction per sample (shape = batch shape). The public
``forward``/``inverse`` add argument validation and nothing else, so
``inverse(y)[1] == -forward(x)[1]`` at a pair ``y = forward(x)[0]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..errors import ShapeError
from ..settings import validation_enabled
from ..spec import Recorded

__all__ = ["Compose", "Inverse", "Transform"]


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Transform(Recorded, nn.Module):
    """Base class of every invertible layer.

    ``y, ladj = t(x, context=None)`` maps base-side ``x`` to data-side ``y`` and returns
    ``ladj = log|det dy/dx|`` per sample; ``x, ladj = t.inverse(y, context=None)`` goes
    back and returns ``log|det dx/dy|``. Features are in the last ``event_dim``
    dimensions (1 for vectors, 3 for images ``(C, H, W)``); any number of leading batch
    dimensions, including none, is accepted.

    Class attributes describing the layer (used by the documentation and the checks):

    Attributes:
        event_dim: number of trailing dimensions that form one event.
        event_shape: the expected event shape, or ``None`` if any shape is accepted.
        context_features: size of the context vector for conditional layers, else ``None``.
        cheap_direction: ``"both"``, ``"forward"`` or ``"inverse"``.
        inverse_method: ``"closed form"`` or a description of the iterative solver.
        iterative: whether the inverse is iterative (checks then use its tolerance).
    """

    event_dim: int = 1
    cheap_direction: str = "both"
    inverse_method: str = "closed form"
    iterative: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.event_shape: tuple[int, ...] | None = None
        self.context_features: int | None = None

    # -- the two primitives -------------------------------------------------------------
    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    # -- public API ---------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction: returns ``(y, log|det dy/dx|)``."""
        if validation_enabled():
            self._validate(x, context, "forward")
        return self._forward(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction: returns ``(x, log|det dx/dy|)``."""
        if validation_enabled():
            self._validate(y, context, "inverse")
        return self._inverse(y, context)

    @property
    def inv(self) -> Transform:
        """This transform with its directions swapped (cheap: shares the parameters)."""
        return Inverse(self)

    def batch_shape(self, x: Tensor) -> torch.Size:
        """The batch shape of ``x`` for this transform's ``event_dim``."""
        return x.shape[: x.dim() - self.event_dim]

    def extra_repr(self) -> str:
        parts = []
        if self.event_shape is not None:
            parts.append(f"event_shape={_fmt(self.event_shape)}")
        if self.context_features is not None:
            parts.append(f"context_features={self.context_features}")
        return ", ".join(parts)

    # -- validation ---------------------------------------------------------------------
    def _validate(self, x: Tensor, context: Tensor | None, direction: str) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}.{direction} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() < self.event_dim:
            raise ShapeError(
                f"{name}.{direction} expects inputs with at least {self.event_dim} dimension(s) "
                f"(batch..., event); got shape {_fmt(x.shape)}"
            )
        es = self.event_shape
        if es is not None and tuple(x.shape[x.dim() - len(es) :]) != tuple(es):
            raise ShapeError(
                f"{name}.{direction} expects inputs of shape (..., {', '.join(map(str, es))}); "
                f"got {_fmt(x.shape)}"
            )
        if self.context_features is not None:
            if context is None:
                raise ShapeError(
                    f"{name} is conditional: pass context=<tensor of shape (..., {self.context_features})>"
                )
            if context.dim() < 1 or context.shape[-1] != self.context_features:
                raise ShapeError(
                    f"{name}.{direction} expects a context of shape (..., {self.context_features}); "
                    f"got {_fmt(context.shape)}"
                )
            batch = self.batch_shape(x)
            try:
                torch.broadcast_shapes(batch, context.shape[:-1])
            except RuntimeError:
                raise ShapeError(
                    f"{name}.{direction}: the context's batch shape {_fmt(context.shape[:-1])} does not "
                    f"broadcast with the input's batch shape {_fmt(batch)}"
                ) from None


class Compose(Transform):
    """Applies transforms in order; log-determinants add up.

    ``Compose(t1, t2, t3)(x)`` is ``t3(t2(t1(x)))``; the inverse applies the inverses in
    reverse order. Nested compositions are flattened. A context reaches every member.

    Cost: the sum of the members' costs.

    Examples:
        >>> import torch
        >>> from flowforge import transforms as T
        >>> t = T.Compose(T.Diagonal(3), T.Permutation(3, kind="reverse"))
        >>> y, ladj = t(torch.randn(4, 3))
        >>> y.shape, ladj.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(self, *transforms: Transform | Iterable[Transform]) -> None:
        super().__init__()
        flat: list[Transform] = []
        for t in transforms:
            items = t if (isinstance(t, Iterable) and not isinstance(t, Transform)) else [t]
            for item in items:
                if isinstance(item, Compose):
                    flat.extend(item.transforms)
                elif isinstance(item, Transform):
                    flat.append(item)
                else:
                    raise TypeError(f"Compose takes Transform instances; got {type(item).__name__}")
        self.transforms = nn.ModuleList(flat)
        self.event_dim = max((t.event_dim for t in flat), default=1)
        shapes = [t.event_shape for t in flat if t.event_shape is not None]
        # Shape-changing members (Squeeze) make the outer shape the first member's.
        self.event_shape = flat[0].event_shape if flat else None
        if self.event_shape is None and shapes and all(s == shapes[0] for s in shapes):
            self.event_shape = shapes[0]
        ctx = {t.context_features for t in flat if t.context_features is not None}
        self.context_features = ctx.pop() if len(ctx) == 1 else None
        self.iterative = any(t.iterative for t in flat)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]

    def __iter__(self):
        return iter(self.transforms)

    def _validate(self, x: Tensor, context: Tensor | None, direction: str) -> None:
        # Members validate themselves; the composition only checks what no member can.
        if not isinstance(x, Tensor):
            raise TypeError(f"Compose.{direction} expects a torch.Tensor, got {type(x).__name__}")

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        total = None
        for t in self.transforms:
            x, ladj = t(x, context)
            total = ladj if total is None else total + ladj
        if total is None:
            total = x.new_zeros(x.shape[: x.dim() - self.event_dim])
        return x, total

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        total = None
        for t in reversed(self.transforms):
            y, ladj = t.inverse(y, context)
            total = ladj if total is None else total + ladj
        if total is None:
            total = y.new_zeros(y.shape[: y.dim() - self.event_dim])
        return y, total


class Inverse(Transform):
    """Swaps the directions of a transform: ``Inverse(t).forward`` is ``t.inverse``.

    Shares the parameters of ``t``; ``Inverse(Inverse(t))`` returns ``t`` itself.
    The cheap direction swaps with it (``Inverse(MAF layer)`` samples in one pass).

    Examples:
        >>> import torch
        >>> from flowforge import transforms as T
        >>> t = T.Exp()
        >>> x = torch.tensor([[0.5, 2.0]])
        >>> T.Inverse(t)(x)[0]
        tensor([[-0.6931,  0.6931]])
    """

    def __new__(cls, transform: Transform | None = None):
        if isinstance(transform, Inverse):
            return transform.base
        return super().__new__(cls)

    def __init__(self, transform: Transform) -> None:
        if not isinstance(transform, Transform):
            raise TypeError(f"Inverse takes a Transform; got {type(transform).__name__}")
        super().__init__()
        self.base = transform
        self.event_dim = transform.event_dim
        self.event_shape = transform.event_shape
        self.context_features = transform.context_features
        self.iterative = transform.iterative
        swap = {"forward": "inverse", "inverse": "forward"}
        self.cheap_direction = swap.get(transform.cheap_direction, transform.cheap_direction)

    def _validate(self, x: Tensor, context: Tensor | None, direction: str) -> None:
        pass  # the wrapped transform validates in its own terms

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.base.inverse(x, context)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.base(y, context)
