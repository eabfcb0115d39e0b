"""SOLVER.AMP.ENABLED on a CPU: Detectron2's AMPTrainer needs CUDA, so the steps run in a
SimpleTrainer and the model autocasts its keypoint branch to bfloat16 itself."""

import pytest
import torch

from detectron2.engine import AMPTrainer, SimpleTrainer

import train_net
from depotr.engine import Trainer
from depotr.modeling import TopDownPoseEstimator

from .conftest import instant_args


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path: with CUDA, AMPTrainer runs")
def test_amp_training_on_cpu_steps_in_bfloat16(tmp_path, synthetic_root, monkeypatch):
    forward = TopDownPoseEstimator.forward
    body_dtypes = []

    def recording_forward(self, batched_inputs):
        if self.training and not body_dtypes:
            linear = next(m for m in self.keypoint_branch.body.modules() if isinstance(m, torch.nn.Linear))
            linear.register_forward_hook(lambda m, a, o: body_dtypes.append(o.dtype) if m.training else None)
        return forward(self, batched_inputs)

    monkeypatch.setattr(TopDownPoseEstimator, "forward", recording_forward)
    opts = ("SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0")
    trainer = Trainer(train_net.setup(instant_args(str(tmp_path / "amp"), synthetic_root, *opts)))
    # said where log.txt is set up (the config's load, before any logger, said it to no one)
    log = (tmp_path / "amp" / "log.txt").read_text()
    assert "SOLVER.AMP.ENABLED on cpu: the keypoint branch trains under bfloat16 autocast" in log
    step_trainer = trainer.step_trainer
    assert type(step_trainer) is SimpleTrainer and not isinstance(step_trainer, AMPTrainer)
    assert trainer.model.train_precision == torch.bfloat16
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert body_dtypes and set(body_dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert (tmp_path / "amp" / "model_final.pth").exists()
