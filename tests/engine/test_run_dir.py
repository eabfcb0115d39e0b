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
from depotr.cli import ConfigError, run_main
from depotr.engine.run_dir import LOCK_NAME, drop_metrics_after, lock_output_dir

from .conftest import INSTANT_CONFIG


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


def _train_net_error(output_dir, tmp_path, capsys, *options):
    """The stderr lines of ``train_net.py [options]`` training the instant config in ``output_dir``; status 2."""
    argv = [*options, "--config-file", INSTANT_CONFIG, "OUTPUT_DIR", output_dir]
    argv += ["DATASETS.SYNTHETIC.ROOT", str(tmp_path / "s")]
    capsys.readouterr()
    assert run_main(train_net.cli, argv) == 2
    return capsys.readouterr().err.splitlines()


def test_second_run_on_a_live_runs_folder_is_refused_before_writing(live_run, tmp_path, capsys):
    """The friction: train_net.py's refusal was a RuntimeError traceback and status 1."""
    output_dir, child = live_run
    lock_file = os.path.join(output_dir, LOCK_NAME)
    for resume in (False, True):
        with pytest.raises(ConfigError, match=r"OUTPUT_DIR .*run is in use by another run, which holds "):
            lock_output_dir(output_dir, resume=resume)
    err = _train_net_error(output_dir, tmp_path, capsys)
    assert err[-1].startswith(
        f"error: OUTPUT_DIR {output_dir} is in use by another run, which holds {lock_file} (pid {child.pid} "
    )
    assert err[-1].endswith("wait for it to finish or give this run another OUTPUT_DIR")
    assert not any("Traceback" in line for line in err)
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
        with pytest.raises(ConfigError, match=rf"run that was killed \(pid {child.pid} .*pass --resume"):
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


@pytest.mark.parametrize("trained", [True, False], ids=["checkpointed", "no-checkpoint"])
def test_a_new_run_over_a_killed_one_is_one_error_line_saying_what_resume_does(live_run, tmp_path, capsys, trained):
    """The friction: a RuntimeError traceback and status 1, which advised deleting run.lock; after
    that, a folder where the killed run had trained was refused again (an earlier training run)."""
    output_dir, child = live_run
    _kill(child)
    if trained:
        with open(os.path.join(output_dir, "last_checkpoint"), "w") as f:
            f.write("model_0000019.pth")
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            f.write(_ROW)
    err = _train_net_error(output_dir, tmp_path, capsys)
    assert not any("Traceback" in line for line in err)
    lock_file = os.path.join(output_dir, LOCK_NAME)
    killed = f"error: OUTPUT_DIR {output_dir} holds the outputs of a run that was killed (pid {child.pid} "
    assert err[-1].startswith(killed)
    assert f", whose lock file {lock_file} no process holds: " in err[-1]
    tag = os.path.join(output_dir, "last_checkpoint")
    resume = (  # what Trainer.resume_or_load does
        f"continue it from the checkpoint {tag} names (the metrics.json rows it wrote after it are dropped)"
        if trained
        else "start it again from MODEL.WEIGHTS, as it left no checkpoint (the metrics.json rows it wrote are dropped)"
    )
    assert f"no process holds: pass --resume to {resume}, or give this run another OUTPUT_DIR" in err[-1]
    assert err[-1].endswith(", or give this run another OUTPUT_DIR")
    lock_output_dir(output_dir, resume=True).release()  # the advice is taken


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
        resume = (  # what Trainer.resume_or_load does: the friction, "continue it" without a checkpoint
            f"continue it from the checkpoint {output_dir / 'last_checkpoint'} names"
            if "last_checkpoint" in files
            else "start it again from MODEL.WEIGHTS, as it left no checkpoint (the metrics.json rows it wrote are"
        )
        assert f"pass --resume to {resume}" in message and ", give this run another OUTPUT_DIR" in message
        assert sorted(os.listdir(output_dir)) == sorted(files)  # no run.lock left behind
    else:
        lock_output_dir(str(output_dir), resume=False).release()
    for resume, eval_only in ((True, False), (False, True)):
        lock_output_dir(str(output_dir), resume=resume, eval_only=eval_only).release()
    assert {name: (output_dir / name).read_text() for name in files} == files


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_processes")
def test_a_refusal_in_one_of_two_processes_is_the_same_error_line(tmp_path, capfd):
    """The friction: with --num-gpus 2 (two CPU processes) the refusal in rank 0's setup() came back
    through torch.multiprocessing.spawn as a ProcessRaisedException traceback and status 1; and
    rank 1 had written its log.txt.rank1 into the refused folder (appending to a live run's)."""
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "last_checkpoint").write_text("model_final.pth")
    err = _train_net_error(str(output_dir), tmp_path, capfd, "--num-gpus", "2")  # capfd: the processes' too
    assert err[-1].startswith(f"error: OUTPUT_DIR {output_dir} holds an earlier training run (")
    assert not any("Traceback" in line for line in err)
    assert os.listdir(output_dir) == ["last_checkpoint"]


@pytest.mark.parametrize("under_the_file", [False, True], ids=["a-file", "under-a-file"])
def test_an_output_dir_that_cannot_be_created_is_one_error_line(tmp_path, capsys, under_the_file):
    """The friction: OUTPUT_DIR on a read-only file system (or where a file is) ended train_net.py
    in an OSError traceback from os.makedirs, status 1."""
    in_the_way = tmp_path / "in_the_way"
    in_the_way.write_text("not a folder")
    output_dir = in_the_way / "run" if under_the_file else in_the_way
    for options in ((), ("--resume",), ("--eval-only", "--random-weights")):
        err = _train_net_error(str(output_dir), tmp_path, capsys, *options)
        assert len(err) == 1 and err[0].startswith(f"error: OUTPUT_DIR {output_dir} cannot be written (")
        assert "give the run a folder it can create and write into" in err[0]
    assert in_the_way.read_text() == "not a folder"


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
