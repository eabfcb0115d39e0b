"""A loss that becomes NaN stops training with an error naming the iteration and the term."""

import pytest

import train_net
from depotr.engine import Trainer
from depotr.modeling import TopDownPoseEstimator

from .conftest import instant_args


@pytest.mark.slow
def test_nan_loss_raises_naming_iteration_and_term(tmp_path, synthetic_root, monkeypatch):
    forward = TopDownPoseEstimator.forward

    def forward_with_nan_at_iteration_3(self, batched_inputs):
        losses = forward(self, batched_inputs)
        calls.append(1)
        if self.training and len(calls) == 4:
            losses["loss_heatmap"] = losses["loss_heatmap"] * float("nan")
        return losses

    calls = []
    monkeypatch.setattr(TopDownPoseEstimator, "forward", forward_with_nan_at_iteration_3)
    cfg = train_net.setup(instant_args(str(tmp_path / "nan"), synthetic_root, "SOLVER.MAX_ITER", "10"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"(?s)iteration=3.*loss_heatmap"):
        trainer.train()
    assert not (tmp_path / "nan" / "model_final.pth").exists()
