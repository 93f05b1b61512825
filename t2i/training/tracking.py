"""Metric logging: a CSV tracker for Accelerate (always on) beside TensorBoard (when installed)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker
from accelerate.utils import is_tensorboard_available


class CSVTracker(GeneralTracker):
    """Appends one row per `accelerator.log` call to `LOGGING_DIR/metrics.csv`.

    The header is the union of all keys seen; when a new key appears, the file is rewritten
    with the wider header (rare: keys are fixed after the first few logs).

    Args:
        logging_dir: the folder for metrics.csv.
    """

    name = "csv"
    requires_logging_directory = True

    def __init__(self, logging_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(logging_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] = ["step"]
        if self.path.is_file():
            with self.path.open() as f:
                self.fields = next(csv.reader(f), ["step"])

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        """The run's config is kept as config.yaml by the CLI; nothing to add here."""

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        row = {"step": step, **{k: _scalar(v) for k, v in values.items()}}
        new = [k for k in row if k not in self.fields]
        if new:
            self._widen(self.fields + new)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)

    def _widen(self, fields: list[str]) -> None:
        """Rewrite the file with a wider header."""
        rows = list(csv.DictReader(self.path.open())) if self.path.is_file() else []
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
        self.fields = fields


def _scalar(value: Any) -> Any:
    """A float for tensors and numbers; other values as they are."""
    return value.item() if hasattr(value, "item") else value


def default_trackers(logging_dir: str | Path) -> list:
    """CSV always, TensorBoard too when the package is installed."""
    trackers: list = [CSVTracker(logging_dir)]
    if is_tensorboard_available():
        trackers.append("tensorboard")
    return trackers


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Read a metrics.csv back as a list of rows with float values (empty cells dropped)."""
    with Path(path).open() as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]
