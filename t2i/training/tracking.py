"""Metric logging: a CSV tracker for Accelerate (always on) beside TensorBoard (when installed),
and the loss curve drawn from it (matplotlib)."""

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

    def rewind(self, step: int) -> int:
        """Drop the rows logged after `step` (a run resumed there retrains those steps and
        logs them anew: a crash after the checkpoint would leave them twice); return how
        many were dropped. The file is replaced atomically."""
        if not self.path.is_file():
            return 0
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if not r.get("step") or float(r["step"]) <= step]
        if len(kept) < len(rows):
            self._rewrite(kept, self.fields)
        return len(rows) - len(kept)

    def _widen(self, fields: list[str]) -> None:
        """Rewrite the file with a wider header."""
        rows = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        self._rewrite(rows, fields)

    def _rewrite(self, rows: list[dict], fields: list[str]) -> None:
        """The file as `rows` under the header `fields`, replaced atomically."""
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)
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


def read_metrics(path: str | Path, rows: str = "train") -> list[dict[str, float]]:
    """Read a metrics.csv back as a list of rows with float values (empty cells dropped).

    Args:
        path: the file.
        rows: "train" (the training rows), "val" (the validation rows: `val/...` keys,
            logged at each sample step and at the end) or "all".
    """
    if rows not in ("train", "val", "all"):
        raise ValueError(f"rows={rows!r}: use 'train', 'val' or 'all'")
    with Path(path).open() as f:
        read = [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]
    if rows == "all":
        return read
    val = rows == "val"
    return [r for r in read if any(k.startswith("val/") for k in r) == val]


def plot_losses(rows: list[dict[str, float]], path: str | Path) -> Path | None:
    """Draw the training loss (each logged row) and the validation loss (its rows) against
    the step, on a log scale when the loss spans a decade; write a PNG at `path` (atomically).

    Args:
        rows: `read_metrics` of a run's metrics.csv.
        path: where the PNG goes.

    Returns:
        The path, or None when no row holds a loss.
    """
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    val = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r and "step" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, label="training loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=4, label="validation loss")
    values = [v for _, v in train + val if v > 0]
    if values and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path
