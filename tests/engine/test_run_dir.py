"""One live run per OUTPUT_DIR; what a killed run leaves (its lock, temporary files, metrics rows
past its last checkpoint) is detected and cleaned up."""

import json
import multiprocessing as mp
import os
import re
import signal
import time

import pytest

import train_net
from depotr.cli import ConfigError
from depotr.engine.run_dir import LOCK_NAME, drop_metrics_after, lock_output_dir

from .conftest import instant_args


def _hold_lock(output_dir, ready):
    lock_output_dir(output_dir, resume=False)
    ready.set()
    time.sleep(600)


@pytest.fixture
def live_run(tmp_path):
    """(OUTPUT_DIR, child process) of a run that holds the folder's lock until killed."""
    output_dir = str(tmp_path / "run")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(output_dir, ready), daemon=True)
    child.start()
    assert ready.wait(60), "the child run did not take the lock"
    yield output_dir, child
    child.kill()
    child.join()


def _kill(child):
    os.kill(child.pid, signal.SIGKILL)  # no clean-up of any kind, as a killed job
    child.join()


def test_second_run_on_a_live_runs_folder_is_refused_before_writing(live_run, tmp_path):
    output_dir, child = live_run
    for resume in (False, True):
        with pytest.raises(RuntimeError, match=rf"OUTPUT_DIR .*run is in use by another run \(pid {child.pid} "):
            lock_output_dir(output_dir, resume=resume)
    with pytest.raises(RuntimeError, match=rf"in use by another run \(pid {child.pid} "):
        train_net.setup(instant_args(output_dir, str(tmp_path / "synthetic")))
    assert sorted(os.listdir(output_dir)) == [LOCK_NAME]  # no config.yaml, no log.txt


@pytest.mark.parametrize(
    "resume, eval_only, allowed",
    [(False, False, False), (True, False, True), (False, True, True)],
    ids=["new-training-refused", "resume-allowed", "eval-only-allowed"],
)
def test_killed_runs_lock_is_stale(live_run, resume, eval_only, allowed):
    output_dir, child = live_run
    _kill(child)
    if not allowed:
        with pytest.raises(RuntimeError, match=rf"run that was killed \(pid {child.pid} .*pass --resume"):
            lock_output_dir(output_dir, resume=resume, eval_only=eval_only)
        return
    lock = lock_output_dir(output_dir, resume=resume, eval_only=eval_only)
    try:
        assert lock.previous_owner["pid"] == child.pid
        owner = json.loads(open(os.path.join(output_dir, LOCK_NAME)).read())
        assert owner["pid"] == os.getpid()
    finally:
        lock.release()
    assert not os.path.exists(os.path.join(output_dir, LOCK_NAME))
    lock_output_dir(output_dir, resume=False).release()  # released cleanly: free for a new run


_ROW = json.dumps({"iteration": 19, "total_loss": 1.0}) + "\n"


@pytest.mark.parametrize(
    "files, refused",
    [
        ({"last_checkpoint": "model_final.pth"}, True),
        ({"metrics.json": _ROW}, True),  # e.g. a run that stopped on a NaN loss before its first checkpoint
        ({"last_checkpoint": "model_final.pth", "metrics.json": _ROW}, True),
        ({"metrics.json": "", "log.txt": "", "config.yaml": ""}, False),  # failed before its first row; --eval-only
    ],
    ids=["checkpointed", "metrics-rows", "finished", "no-training-record"],
)
def test_new_training_run_in_an_earlier_runs_folder_is_refused_before_writing(tmp_path, files, refused):
    """The friction: a second run without --resume appended its rows to the first's metrics.json
    (Detectron2's JSONWriter appends) and overwrote its checkpoints one by one."""
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    for name, text in files.items():
        (output_dir / name).write_text(text)
    if refused:
        with pytest.raises(ConfigError) as error:
            lock_output_dir(str(output_dir), resume=False)
        message = str(error.value)
        assert message.startswith(f"OUTPUT_DIR {output_dir} holds an earlier training run (")
        assert all(str(output_dir / name) in message for name in files)
        assert "pass --resume to continue it, give this run another OUTPUT_DIR" in message
        assert sorted(os.listdir(output_dir)) == sorted(files)  # no run.lock left behind
    else:
        lock_output_dir(str(output_dir), resume=False).release()
    for resume, eval_only in ((True, False), (False, True)):
        lock_output_dir(str(output_dir), resume=resume, eval_only=eval_only).release()
    assert {name: (output_dir / name).read_text() for name in files} == files


def test_a_process_holding_the_lock_cannot_start_a_second_run_there(tmp_path):
    output_dir = str(tmp_path / "run")
    lock_output_dir(output_dir, resume=False)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:  # the first run trained
        f.write(_ROW)
    with pytest.raises(ConfigError, match="holds an earlier training run"):
        lock_output_dir(output_dir, resume=False)  # e.g. a notebook setting up a second run
    assert not os.path.exists(os.path.join(output_dir, LOCK_NAME))  # released
    lock_output_dir(output_dir, resume=True).release()


def test_taking_the_lock_removes_temporaries_of_killed_writes(live_run):
    output_dir, child = live_run
    orphan = os.path.join(output_dir, ".tmp-0123456789ab-model_0000099.pth")
    with open(orphan, "wb") as f:
        f.write(b"half a checkpoint")
    assert os.path.exists(orphan)  # a live run may still be writing it
    _kill(child)
    lock = lock_output_dir(output_dir, resume=True)
    try:
        assert lock.removed_temporaries == [orphan] and not os.path.exists(orphan)
    finally:
        lock.release()


def test_metrics_rows_past_the_resumed_iteration_are_dropped(tmp_path):
    metrics = tmp_path / "metrics.json"
    rows = [{"iteration": i, "total_loss": 1.0 / (i + 1)} for i in (19, 39, 49, 59)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 6')  # killed mid-row
    with open(metrics, "a") as writer:  # Detectron2's JSONWriter opened it before the resume
        assert drop_metrics_after(str(metrics), 50) == 2
        writer.write(json.dumps({"iteration": 59, "total_loss": 0.5}) + "\n")
    assert [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()] == [19, 39, 49, 59]
    assert drop_metrics_after(str(tmp_path / "missing.json"), 50) == 0


def test_lock_names_this_process_and_is_kept_across_setups(tmp_path):
    output_dir = str(tmp_path / "run")
    lock = lock_output_dir(output_dir, resume=False)
    try:
        assert lock_output_dir(output_dir, resume=True) is lock  # e.g. a notebook re-running setup()
        owner = json.loads(open(os.path.join(output_dir, LOCK_NAME)).read())
        assert owner["pid"] == os.getpid() and re.search(r"python|pytest", owner["command"])
    finally:
        lock.release()
