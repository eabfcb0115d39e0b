"""--resume after an interruption continues exactly where the checkpoint left off."""

import json
import os

import pytest
import torch

from detectron2.engine import HookBase

import train_net
from depotr.engine import Trainer

from .conftest import instant_args


class _Interrupt(HookBase):
    """Stops training before iteration ``at`` runs, as a killed job would."""

    def __init__(self, at: int):
        self._at = at

    def before_step(self):
        if self.trainer.iter == self._at:
            raise KeyboardInterrupt(f"simulated interruption before iteration {self._at}")


def _train(output_dir, synthetic_root, interrupt_at=None, resume=False):
    cfg = train_net.setup(
        instant_args(output_dir, synthetic_root, "SOLVER.MAX_ITER", "30", "SOLVER.CHECKPOINT_PERIOD", "10")
    )
    trainer = Trainer(cfg)
    if interrupt_at is not None:
        trainer.register_hooks([_Interrupt(interrupt_at)])
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path, synthetic_root):
    straight = _weights(_train(str(tmp_path / "straight"), synthetic_root))

    interrupted_dir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        _train(interrupted_dir, synthetic_root, interrupt_at=20)
    with open(os.path.join(interrupted_dir, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000019.pth"
    metrics_file = os.path.join(interrupted_dir, "metrics.json")
    with open(metrics_file, "a") as f:  # a row the killed run logged after its last checkpoint
        f.write(json.dumps({"iteration": 29, "total_loss": 123.0}) + "\n")
    resumed_trainer = _train(interrupted_dir, synthetic_root, resume=True)
    assert resumed_trainer.start_iter == 20
    with open(metrics_file) as f:
        rows = [json.loads(line) for line in f]
    iterations = [row["iteration"] for row in rows]
    assert len(iterations) == len(set(iterations)) and 29 in iterations, iterations
    assert all(row.get("total_loss") != 123.0 for row in rows)
    resumed = _weights(resumed_trainer)

    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=name)
    # And the run really trained: weights moved away from the iteration-19 checkpoint.
    checkpoint = torch.load(os.path.join(interrupted_dir, "model_0000019.pth"), map_location="cpu")
    moved = [n for n, v in checkpoint["model"].items() if v.is_floating_point() and not torch.equal(v, resumed[n])]
    assert moved
