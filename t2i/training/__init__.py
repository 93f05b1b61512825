"""The one training loop, its checkpoints and its logs; it knows no model family."""

from t2i.training.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from t2i.training.devices import seed_everything
from t2i.training.tracking import CSVTracker, read_metrics
from t2i.training.trainer import NonFiniteLossError, Trainer, TrainResult

__all__ = [
    "CSVTracker",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "list_checkpoints",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
    "seed_everything",
]
