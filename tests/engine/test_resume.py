"""--resume after an interruption continues exactly where the checkpoint left off."""

import itertools
import json
import os
import random

import numpy as np
import pytest
import torch

from detectron2.engine import HookBase

import train_net
from depotr.engine import Trainer
from depotr.engine.trainer import (
    ResumableTrainingSampler,
    SeededSampleStream,
    build_resumable_train_loader,
    sample_seed,
)

from .conftest import instant_args


class _Interrupt(HookBase):
    """Stops training before iteration ``at`` runs, as a killed job would."""

    def __init__(self, at: int):
        self._at = at

    def before_step(self):
        if self.trainer.iter == self._at:
            raise KeyboardInterrupt(f"simulated interruption before iteration {self._at}")


class _RandomDraws(torch.utils.data.Dataset):
    """Element i: (i, a draw of Python's, NumPy's and torch's RNG), as an augmenting mapper."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return (i, random.random(), float(np.random.rand()), float(torch.rand(())))


def _batches(start_iter, num_workers, count, batch=2, seed=7):
    loader = build_resumable_train_loader(_RandomDraws(), seed, batch, num_workers, start_iter)
    return list(itertools.islice(loader, count))


def test_sample_stream_is_the_same_with_workers_and_restarts_at_any_batch():
    straight = _batches(0, 0, 7)
    assert _batches(0, 2, 7) == straight  # workers map whole batches in turn
    assert _batches(3, 2, 4) == straight[3:]  # a resumed loader continues the stream
    assert _batches(3, 0, 4) == straight[3:]
    # Every sample is drawn under the seed of its position in the stream.
    first = straight[0][0]
    random.seed(sample_seed(7, 0, 0)), np.random.seed(sample_seed(7, 0, 0)), torch.manual_seed(sample_seed(7, 0, 0))
    assert first[1:] == (random.random(), float(np.random.rand()), float(torch.rand(())))
    draws = [x[1] for b in straight for x in b]
    assert len(set(draws)) == len(draws)  # no two samples share a seed
    with pytest.raises(ValueError, match="not a multiple of batch 2"):
        SeededSampleStream(_RandomDraws(), ResumableTrainingSampler(5, seed=7, start_index=3), 2, 7)


def _train(output_dir, synthetic_root, num_workers, interrupt_at=None, resume=False, max_iter=30):
    opts = (
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        "10",
        "DATALOADER.NUM_WORKERS",
        str(num_workers),
    )
    cfg = train_net.setup(instant_args(output_dir, synthetic_root, *opts, extra=("--resume",) if resume else ()))
    trainer = Trainer(cfg)
    if interrupt_at is not None:
        trainer.register_hooks([_Interrupt(interrupt_at)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_matches_uninterrupted_run(tmp_path, synthetic_root, num_workers):
    """Bit-exact with data-loader workers too: each sample is augmented under a seed of (run
    seed, rank, stream position), and workers map whole batches in turn
    (depotr.engine.trainer.SeededSampleStream); metrics.json's rows equal the straight run's."""
    straight = _weights(_train(str(tmp_path / "straight"), synthetic_root, num_workers))

    interrupted_dir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        _train(interrupted_dir, synthetic_root, num_workers, interrupt_at=20)
    with open(os.path.join(interrupted_dir, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000019.pth"
    metrics_file = os.path.join(interrupted_dir, "metrics.json")
    with open(metrics_file, "a") as f:  # a row the killed run logged after its last checkpoint
        f.write(json.dumps({"iteration": 29, "total_loss": 123.0}) + "\n")
    resumed_trainer = _train(interrupted_dir, synthetic_root, num_workers, resume=True)
    assert resumed_trainer.start_iter == 20
    with open(metrics_file) as f:
        rows = [json.loads(line) for line in f]
    iterations = [row["iteration"] for row in rows]
    assert len(iterations) == len(set(iterations)) and 29 in iterations, iterations
    assert all(row.get("total_loss") != 123.0 for row in rows)
    # The rows' losses (medians over the writers' 20 iterations) too: the friction, the resumed run's
    # window held only its own iterations, so its iteration-29 total_loss was another number.
    with open(os.path.join(str(tmp_path / "straight"), "metrics.json")) as f:
        straight_rows = [json.loads(line) for line in f]
    losses = [(row["iteration"], row.get("total_loss")) for row in rows]
    assert losses == [(row["iteration"], row.get("total_loss")) for row in straight_rows] and (29, None) not in losses
    resumed = _weights(resumed_trainer)

    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name
    # And the run really trained: weights moved away from the iteration-19 checkpoint.
    checkpoint = torch.load(os.path.join(interrupted_dir, "model_0000019.pth"), map_location="cpu")
    moved = [n for n, v in checkpoint["model"].items() if v.is_floating_point() and not torch.equal(v, resumed[n])]
    assert moved


def test_resume_without_a_checkpoint_drops_every_row_of_the_dead_run(tmp_path, synthetic_root):
    """The friction: a run killed before its first checkpoint left metrics rows; --resume starts
    it again from iteration 0 and appended its rows after them (rows were dropped only when a
    checkpoint was resumed)."""
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    rows = [{"iteration": i, "total_loss": 9.0} for i in (0, 19)]
    (output_dir / "metrics.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    trainer = Trainer(train_net.setup(instant_args(str(output_dir), synthetic_root, extra=("--resume",))))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 0 and (output_dir / "metrics.json").read_text() == ""


@pytest.mark.slow
def test_worker_count_does_not_change_training(tmp_path, synthetic_root):
    """The same batches, augmentation and model draws with 0 workers (mapping in the main
    process) as with 2."""

    class _Snapshot(HookBase):
        def before_train(self):
            self.weights = _weights(self.trainer)

    runs, snapshots = [], []
    for num_workers in (0, 2):
        cfg = train_net.setup(
            instant_args(str(tmp_path / f"w{num_workers}"), synthetic_root, "SOLVER.MAX_ITER", "8",
                         "DATALOADER.NUM_WORKERS", str(num_workers))
        )  # fmt: skip
        trainer = Trainer(cfg)
        snapshots.append(_Snapshot())
        trainer.register_hooks([snapshots[-1]])
        trainer.resume_or_load(resume=False)
        trainer.train()
        runs.append(_weights(trainer))
    assert runs[0].keys() == runs[1].keys()
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name
    start = snapshots[0].weights
    assert any(not torch.equal(runs[0][n], v) for n, v in start.items() if v.is_floating_point())  # it trained


def test_resume_of_a_finished_run_writes_its_reevaluation_at_the_final_iteration(tmp_path, synthetic_root):
    """The friction: `make main` run again (--resume on the finished run) re-evaluated it and wrote
    the evaluation row at iteration MAX_ITER + 1 (Detectron2's ``iter += 1`` after a loop that ran no
    step), where the finished run had written it at MAX_ITER."""
    output_dir = str(tmp_path / "run")
    metrics_file = os.path.join(output_dir, "metrics.json")

    def rows():
        with open(metrics_file) as f:
            return [(row["iteration"], "keypoints/AP" in row) for row in map(json.loads, f)]

    _train(output_dir, synthetic_root, 0, max_iter=2)
    finished = rows()
    assert finished == [(1, False), (2, True)]  # the training row, then the evaluation at MAX_ITER
    assert _train(output_dir, synthetic_root, 0, resume=True, max_iter=2).start_iter == 2
    assert rows() == finished  # re-evaluated: its row replaces the finished run's, at the same iteration


def test_resume_under_another_world_size_warns(tmp_path, synthetic_root):
    """The friction: a run trained with --num-gpus 2 and resumed with --num-gpus 1 continued on
    another sample stream (docs/resume.md: not a continuation) without a word; config.yaml has
    no key for the world size, so the config-change warning could not say it."""
    output_dir = str(tmp_path / "run")
    _train(output_dir, synthetic_root, 0, max_iter=2)
    checkpoint_file = os.path.join(output_dir, "model_final.pth")
    checkpoint = torch.load(checkpoint_file, map_location="cpu")
    assert checkpoint["trainer"]["world_size"] == 1
    warning = "--resume with 1 process(es) continues a run checkpointed with 2: the sampler shards"
    log = os.path.join(output_dir, "log.txt")
    for world_size, warned in ((1, False), (2, True)):
        checkpoint["trainer"]["world_size"] = world_size
        torch.save(checkpoint, checkpoint_file)
        Trainer(train_net.setup(instant_args(output_dir, synthetic_root, extra=("--resume",)))).resume_or_load()
        with open(log) as f:
            assert (warning in f.read()) == warned
