"""Training engines: maximum likelihood (:func:`fit`) and variational inference (:func:`fit_vi`).

Both return a :class:`History`, show a progress bar, write atomic checkpoints that
``resume=True`` continues exactly, and roll back on non-finite losses or gradients.
"""

from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from .data import EpochSampler, split
from .elbo import TargetError, call_target, vi_loss
from .engine import TrainingDivergedError
from .history import History
from .ml import evaluate, fit, nll
from .schedule import Schedule
from .vi import fit_vi

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "EpochSampler",
    "History",
    "Schedule",
    "TargetError",
    "TrainingDivergedError",
    "call_target",
    "evaluate",
    "fit",
    "fit_vi",
    "load_checkpoint",
    "nll",
    "save_checkpoint",
    "split",
    "vi_loss",
]
