"""Run folders: one per run, never overwritten, holding everything needed to read or resume it.

    runs/<dataset>-<YYYYmmdd-HHMMSS>[-n]/
        config.json      resolved config
        metrics.csv      one row per epoch, appended and fsynced line by line
        checkpoint.pt    latest state (atomic)
        metrics.json     final metrics (flat keys)
        *.png            pictures
"""

import csv
import io
import json
import math
import os
import time
from pathlib import Path

from common.checkpoint import atomic_write, write_json
from common.errors import UserError

CONFIG_FILE = "config.json"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
CHECKPOINT = "checkpoint.pt"


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(cls, root, dataset: str, name: str, config: dict) -> "RunFolder":
        """Make a new folder under root (named `name`, or dataset + timestamp) and save config."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        if name:
            path = root / name
            try:
                path.mkdir()
            except FileExistsError:
                raise UserError(
                    f"run folder '{path}' already exists; pick another run.name, or continue it "
                    f"with --resume {path}"
                ) from None
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for n in range(1000):
                path = root / (f"{dataset}-{stamp}" + (f"-{n}" if n else ""))
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:
                raise UserError(f"could not make a new run folder under {root}; set run.name")
        run = cls(path)
        write_json(config, run.path / CONFIG_FILE)
        return run

    @classmethod
    def open(cls, path) -> "RunFolder":
        run = cls(path)
        if not (run.path / CONFIG_FILE).is_file():
            raise UserError(f"'{path}' is not a run folder (no {CONFIG_FILE} in it)")
        return run

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files left by a write that was killed before its rename."""
        for leftover in self.path.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def config(self) -> dict:
        try:
            return json.loads((self.path / CONFIG_FILE).read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{self.path / CONFIG_FILE} is not valid JSON ({err})") from None

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def append_metrics(self, row: dict) -> None:
        """Append one CSV row (header first if the file is new); durable before returning."""
        path = self.path / METRICS_CSV
        new = not path.exists() or path.stat().st_size == 0
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
        with open(path, "a", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS_CSV
        if not path.exists():
            return []
        text = path.read_text()
        if text and not text.endswith("\n"):  # a crash mid-line: drop the torn tail
            text = text[: text.rfind("\n") + 1]
        return [row for row in csv.DictReader(io.StringIO(text)) if None not in row.values()]

    def keep_metrics_through(self, epoch: int) -> None:
        """On resume: drop rows past the checkpoint's epoch (and any half-written last line)."""
        path = self.path / METRICS_CSV
        rows = [r for r in self.read_metrics() if int(r["epoch"]) <= epoch]
        if not rows:
            path.unlink(missing_ok=True)
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(path, lambda handle: handle.write(buffer.getvalue().encode()))

    def write_final_metrics(self, metrics: dict) -> None:
        write_json(metrics, self.path / METRICS_JSON)


def _csv_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value
