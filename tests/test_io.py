"""common.checkpoint (atomic, code-free checkpoints) and common.runlog (run folders, metrics CSV)."""
import json
import os
import signal
import time

import pytest
import torch

from common import checkpoint as ck
from common import runlog
from common.errors import UserError
from common.runlog import RunFolder


# ---------------------------------------------------------------- checkpoints


def _adam_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    return model, opt


def test_checkpoint_round_trip(tmp_path):
    model, opt = _adam_state()
    state = {
        "format": 1,
        "epoch": 7,
        "elapsed_s": 12.5,
        "name": "dsprites",
        "flag": True,
        "nothing": None,
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "nested": {"a": {"b": [1, 2.5, "x"], "t": torch.arange(6).reshape(2, 3)}},
        "rng": {"torch": torch.get_rng_state()},
        "config": {"entities": {"relations": [{"name": "left", "step": -1, "cyclic": True}]}},
    }
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint(state, path)
    loaded = ck.load_checkpoint(path)
    assert loaded.keys() == state.keys()
    for key in ("format", "epoch", "elapsed_s", "name", "flag", "nothing", "config"):
        assert loaded[key] == state[key] and type(loaded[key]) is type(state[key])
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    assert loaded["nested"]["a"]["b"] == [1, 2.5, "x"]
    assert torch.equal(loaded["nested"]["a"]["t"], torch.arange(6).reshape(2, 3))
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    # the Adam state restores into a fresh optimizer and continues identically
    opt_state = loaded["opt"]
    assert opt_state["param_groups"] == state["opt"]["param_groups"]
    for pid, s in state["opt"]["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_state["state"][pid][name], s[name])
    model2 = torch.nn.Linear(3, 2)
    model2.load_state_dict(loaded["model"])
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(opt_state)
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, model2.weight)
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


class _Evil:
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    _Evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "payload": evil}, path)
    assert not marker.exists()
    with pytest.raises(UserError, match=r"evil.pt' cannot be loaded safely.*corrupt or not ours"):
        ck.load_checkpoint(path)
    assert not marker.exists()
    # sanity: an unsafe load would indeed have run the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint({"w": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot be loaded safely"):
        ck.load_checkpoint(path)
    path.write_bytes(data[:100])
    with pytest.raises(UserError, match="cannot be loaded safely"):
        ck.load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all\n")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        ck.load_checkpoint(path)


def test_empty_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot be loaded safely \(EOFError"):
        ck.load_checkpoint(path)


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="does not exist"):
        ck.load_checkpoint(tmp_path)  # a folder is not a checkpoint


def test_failed_save_keeps_previous_checkpoint_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint({"epoch": 1, "w": torch.ones(10)}, path)
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint({"epoch": 2, "w": torch.zeros(10)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ck.load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ck.save_checkpoint({"epoch": 1}, path)

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert ck.load_checkpoint(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_write_json_atomic(tmp_path):
    path = tmp_path / "m.json"
    ck.write_json({"a": 1.5, "b": [1, 2], "c": "x"}, path)
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [1, 2], "c": "x"}
    assert path.read_text().endswith("\n")
    assert os.listdir(tmp_path) == ["m.json"]


# ---------------------------------------------------------------- run folders


CFG = {"run": {"seed": 0, "name": ""}, "train": {"lr": 1e-3, "epochs": 3},
       "entities": {"bins": {"posX": [[0, 1], [30, 31]]}}, "flag": False}


def test_named_run_folder_is_never_overwritten(tmp_path):
    run = RunFolder.create(tmp_path / "runs", "dsprites", "exp1", CFG)
    assert run.path == tmp_path / "runs" / "exp1"
    (run.path / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match=r"already exists.*--resume .*exp1"):
        RunFolder.create(tmp_path / "runs", "dsprites", "exp1", {"other": 1})
    assert (run.path / "keep.txt").read_text() == "precious"
    assert run.config() == CFG


def test_auto_named_folders_in_the_same_second_are_distinct(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20240101-120000")
    runs = [RunFolder.create(tmp_path, "dsprites", "", {"i": i}) for i in range(3)]
    names = [r.path.name for r in runs]
    assert names == ["dsprites-20240101-120000", "dsprites-20240101-120000-1",
                     "dsprites-20240101-120000-2"]
    assert [r.config() for r in runs] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_auto_named_folders_real_clock(tmp_path):
    a = RunFolder.create(tmp_path, "dsprites", "", CFG)
    b = RunFolder.create(tmp_path, "dsprites", "", CFG)
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    assert a.path.name.startswith("dsprites-") and b.path.name.startswith("dsprites-")


def test_config_round_trip_and_open(tmp_path):
    run = RunFolder.create(tmp_path, "dsprites", "r", CFG)
    assert (run.path / runlog.CONFIG_FILE).is_file()
    opened = RunFolder.open(run.path)
    assert opened.config() == CFG
    assert opened.checkpoint == run.path / "checkpoint.pt"
    with pytest.raises(UserError, match="is not a run folder"):
        RunFolder.open(tmp_path)
    (run.path / runlog.CONFIG_FILE).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        opened.config()


def _row(epoch, loss):
    return {"epoch": epoch, "phase": "relational", "train/rel": loss, "val/acc": None}


def test_append_metrics_writes_header_once(tmp_path):
    run = RunFolder.create(tmp_path, "d", "r", CFG)
    for e in range(1, 4):
        run.append_metrics(_row(e, e / 4))
    lines = (run.path / runlog.METRICS_CSV).read_text().splitlines()
    assert lines == ["epoch,phase,train/rel,val/acc", "1,relational,0.25,",
                     "2,relational,0.5,", "3,relational,0.75,"]
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[1] == {"epoch": "2", "phase": "relational", "train/rel": "0.5", "val/acc": ""}
    # NaN, like None, is written as an empty cell
    run.append_metrics(_row(4, float("nan")))
    assert run.read_metrics()[-1]["train/rel"] == ""


def test_keep_metrics_through_drops_later_rows(tmp_path):
    run = RunFolder.create(tmp_path, "d", "r", CFG)
    for e in range(1, 6):
        run.append_metrics(_row(e, float(e)))
    run.keep_metrics_through(3)
    assert [int(r["epoch"]) for r in run.read_metrics()] == [1, 2, 3]
    # appending after the cut continues the file, with a single header
    run.append_metrics(_row(4, 40.0))
    text = (run.path / runlog.METRICS_CSV).read_text()
    assert text.count("epoch,phase") == 1
    assert [r["train/rel"] for r in run.read_metrics()] == ["1.0", "2.0", "3.0", "40.0"]
    run.keep_metrics_through(0)
    assert run.read_metrics() == []
    assert not (run.path / runlog.METRICS_CSV).exists()
    run.keep_metrics_through(5)  # no file: nothing to do
    assert run.read_metrics() == []


def test_append_metrics_adds_a_new_versions_columns_to_a_resumed_runs_file(tmp_path):
    """A run made before a loss column existed, resumed by code that writes it: the column
    joins the header at the end, the earlier rows keep their values with that cell blank, and
    a column the new rows lack stays, blank in them. Without this the new row's cells would
    fall under the wrong names."""
    run = RunFolder.create(tmp_path, "d", "r", CFG)
    for e in (1, 2):
        run.append_metrics({"epoch": e, "train/old": e / 2, "train/rel": e})
    run.keep_metrics_through(2)  # as a resume does
    run.append_metrics({"epoch": 3, "train/rel": 3.0, "train/inv": 0.5})
    run.append_metrics({"epoch": 4, "train/rel": 4.0, "train/inv": 0.25})
    lines = (run.path / runlog.METRICS_CSV).read_text().splitlines()
    assert lines == ["epoch,train/old,train/rel,train/inv", "1,0.5,1,", "2,1.0,2,",
                     "3,,3.0,0.5", "4,,4.0,0.25"]
    assert [r["train/inv"] for r in run.read_metrics()] == ["", "", "0.5", "0.25"]


def test_keep_metrics_through_drops_half_written_line(tmp_path):
    run = RunFolder.create(tmp_path, "d", "r", CFG)
    for e in range(1, 4):
        run.append_metrics(_row(e, float(e)))
    with open(run.path / runlog.METRICS_CSV, "a") as handle:
        handle.write("4,relat")  # crash mid-line
    run.keep_metrics_through(10)
    text = (run.path / runlog.METRICS_CSV).read_text()
    assert text.splitlines()[-1] == "3,relational,3.0,"
    assert text.endswith("\n")
    run.append_metrics(_row(4, 4.0))
    assert [int(r["epoch"]) for r in run.read_metrics()] == [1, 2, 3, 4]
    assert sorted(os.listdir(run.path)) == [".lock", "config.json", "metrics.csv"]


def test_read_metrics_skips_torn_last_line(tmp_path):
    run = RunFolder.create(tmp_path, "d", "r", CFG)
    assert run.read_metrics() == []
    run.append_metrics(_row(1, 0.5))
    run.append_metrics(_row(2, 0.25))
    with open(run.path / runlog.METRICS_CSV, "a") as handle:
        handle.write("3,relational")  # fewer fields than the header
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_read_metrics_skips_line_torn_inside_last_field(tmp_path):
    run = RunFolder.create(tmp_path, "d", "r", CFG)
    run.append_metrics({"epoch": 1, "loss": 0.125})
    with open(run.path / runlog.METRICS_CSV, "a") as handle:
        handle.write("2,0.12")  # the full row was "2,0.1234\n"; no newline: torn
    assert [r["epoch"] for r in run.read_metrics()] == ["1"]


def test_final_metrics_json(tmp_path):
    run = RunFolder.create(tmp_path, "d", "r", CFG)
    run.write_final_metrics({"test/cluster_acc@0.99": 0.75, "epochs": 3})
    assert json.loads((run.path / runlog.METRICS_JSON).read_text()) == {
        "test/cluster_acc@0.99": 0.75, "epochs": 3}


def test_run_folder_lock_names_its_holder_and_is_released_on_close(tmp_path):
    run = RunFolder.create(tmp_path, "d", "r", CFG)  # locked by this process
    other = RunFolder.open(run.path)
    with pytest.raises(UserError, match=rf"in use by PID {os.getpid()} on "):
        other.lock()  # a second open file description: refused, as another process would be
    assert runlog.FileLock(run.path / runlog.LOCK).holder() == \
        (run.path / runlog.LOCK).read_text().strip()
    run.writer_lock.release()
    assert runlog.FileLock(run.path / runlog.LOCK).holder() is None
    other.lock()
    assert not run.finished
    run.mark_finished(3)
    assert other.finished and json.loads((run.path / runlog.FINISHED).read_text())["epochs"] == 3


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signals_are_recorded_not_fatal(signum):
    from common import cli
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        signals = cli.StopSignals().install()
        os.kill(os.getpid(), signum)  # delivered to this (main) thread before kill returns
        assert signals.received == signal.Signals(signum).name
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
