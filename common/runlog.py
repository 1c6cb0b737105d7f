"""Run folders: one per run, never overwritten, holding everything needed to read or resume it.

    runs/<dataset>-<YYYYmmdd-HHMMSS>[-n]/
        config.json      resolved config
        metrics.csv      one row per epoch, appended and fsynced line by line
        checkpoint.pt    latest state (atomic)
        metrics.json     final metrics (flat keys); metrics_partial.json for a stopped run
        finished         written last, once metrics.json, pictures and report.md are whole
        *.png            pictures
        .lock            the writer lock (below)

One writer per run folder: a process that trains, resumes or evaluates a run holds an
exclusive fcntl.flock on <run>/.lock for its whole life, and a second process stops at once
naming the holder. The operating system drops the lock when its holder exits, however it
exits (SIGKILL included), so a dead process never blocks. flock is advisory and local: on
Linux NFS clients (kernel >= 2.6.12) it is carried out as an NFS byte-range lock, so it also
holds between machines; Lustre needs the `flock` mount option and some FUSE file systems
ignore it, in which case two machines are not kept apart.
"""

import csv
import fcntl
import io
import json
import math
import os
import socket
import time
from pathlib import Path

from common.checkpoint import atomic_write, write_json
from common.errors import UserError

CONFIG_FILE = "config.json"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
METRICS_PARTIAL = "metrics_partial.json"  # --evaluate of a run stopped before its last epoch
CHECKPOINT = "checkpoint.pt"
FINISHED = "finished"
LOCK = ".lock"


class FileLock:
    """An exclusive, non-blocking fcntl.flock on one file, held until release() or exit; the
    file says who holds it ("PID 123 on host")."""

    def __init__(self, path):
        self.path = Path(path)
        self._handle = None

    def acquire(self) -> str | None:
        """Take the lock: None when taken, else who holds it."""
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            return holder
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._handle = handle
        return None

    def holder(self) -> str | None:
        """Who holds the lock now (None: nobody), without keeping it."""
        if not self.path.exists():
            return None
        holder = self.acquire()
        self.release()
        return holder

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the flock
            self._handle = None


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self.writer_lock = FileLock(self.path / LOCK)

    def lock(self) -> None:
        """Become this run's only writer for the rest of the process, or stop (UserError)."""
        holder = self.writer_lock.acquire()
        if holder is not None:
            raise UserError(f"run folder '{self.path}' is in use by {holder}; wait for that "
                            "process to end (or stop it), then try again")

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
        run.lock()
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
        path = self.path / CONFIG_FILE
        try:
            cfg = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not valid JSON ({err})") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{path} holds a {type(cfg).__name__}, not a run's config; restore "
                            "the file the run wrote")
        return cfg

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def append_metrics(self, row: dict) -> None:
        """Append one CSV row (header first if the file is new); durable before returning. A
        run made by an earlier version and resumed may lack some of this row's columns: they
        are added at the end, the earlier rows written again with those cells blank."""
        path = self.path / METRICS_CSV
        new = not path.exists() or path.stat().st_size == 0
        columns = list(row) if new else self._header()
        if any(key not in columns for key in row):
            columns += [key for key in row if key not in columns]
            self._rewrite(self.read_metrics(), columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
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
        try:
            rows = [r for r in self.read_metrics() if int(r["epoch"]) <= epoch]
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error):
            raise UserError(f"{path} is not a metrics file this code wrote (no readable epoch "
                            "column); move it away to resume without the earlier rows") from None
        if not rows:
            path.unlink(missing_ok=True)
            return
        self._rewrite(rows, list(rows[0]))

    def _header(self) -> list[str]:
        with open(self.path / METRICS_CSV, newline="") as handle:
            return next(csv.reader(handle), [])

    def _rewrite(self, rows: list[dict], columns: list[str]) -> None:
        """metrics.csv replaced at once by these rows under these columns (blank where a row
        has no value)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path / METRICS_CSV,
                     lambda handle: handle.write(buffer.getvalue().encode()))

    def write_final_metrics(self, metrics: dict, partial: bool = False) -> None:
        write_json(metrics, self.path / (METRICS_PARTIAL if partial else METRICS_JSON))

    @property
    def finished(self) -> bool:
        """Whether the run trained every epoch and wrote its final metrics and pictures."""
        return (self.path / FINISHED).is_file()

    def mark_finished(self, epochs: int) -> None:
        write_json({"epochs": epochs, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
                   self.path / FINISHED)


def _csv_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value
