"""depotr.engine.compat: each feature test agrees with the installed Detectron2, and each
workaround gives the same behaviour on v0.6 and main (the map_dataset tests are in
tests/data/test_dataset_mapper.py; resume and CPU launch end to end in test_resume.py and
test_distributed.py)."""

import glob
import importlib.machinery
import os

import pytest
import torch
from torch import nn

import detectron2
from detectron2.checkpoint import detection_checkpoint
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from depotr.engine import compat


class _RandomValues(torch.utils.data.Dataset):
    """Each element drawn from torch's global RNG, as the mapper's box jitter is."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(())


class _RecordingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.inputs = []

    def forward(self, batch):
        self.inputs.append(batch.clone())
        return {"loss": self.weight * batch.sum()}


def _one_step(trainer: SimpleTrainer, seed: int) -> None:
    """One training step after seeding the global RNG, as IterationSeedHook does."""
    with EventStorage(0) as trainer.storage:
        trainer.iter = 0
        torch.manual_seed(seed)
        trainer.run_step()


def test_replaced_data_loader_draws_nothing_from_the_seeded_iteration():
    model = _RecordingModel()
    loader = torch.utils.data.DataLoader(_RandomValues(), batch_size=2, num_workers=0)
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.0))
    compat.start_data_loader(trainer, torch.utils.data.DataLoader(_RandomValues(), batch_size=2, num_workers=0))
    _one_step(trainer, seed=7)
    torch.manual_seed(7)
    expected = torch.rand(2)  # the batch's two draws, right after the seed
    torch.testing.assert_close(model.inputs[0], expected, rtol=0, atol=0)


def test_initial_data_loader_iterator_is_created_up_front():
    model = _RecordingModel()
    trainer = SimpleTrainer(
        model, torch.utils.data.DataLoader(_RandomValues(), batch_size=2), torch.optim.SGD(model.parameters(), lr=0.0)
    )
    compat.start_data_loader(trainer)
    _one_step(trainer, seed=3)
    torch.manual_seed(3)
    torch.testing.assert_close(model.inputs[0], torch.rand(2), rtol=0, atol=0)


def test_cpu_launch_feature_tests_agree():
    """Detectron2 main has both comm.create_local_process_group and a gloo launch; v0.6 neither."""
    assert compat._detectron2_launch_runs_on_cpu() == hasattr(comm, "create_local_process_group")


def test_checkpoint_file_drops_the_url_query_where_detectron2_reads_it():
    """Detectron2 main parses a checkpoint path's query with urllib's parse_qs; v0.6 imports none."""
    reads_query = hasattr(detection_checkpoint, "parse_qs")
    assert compat._checkpointer_reads_url_query() == reads_query
    for path, file in (
        ("out/model.pth?matching_heuristics=True", "out/model.pth"),
        ("https://host/model.pth?matching_heuristics=True", "https://host/model.pth"),
        ("out/model.pth", "out/model.pth"),
    ):
        assert compat.checkpoint_file(path) == (file if reads_query else path)


def _compiled_detectron2_extension() -> bool:
    package_dir = os.path.dirname(detectron2.__file__)
    return any(glob.glob(os.path.join(package_dir, "_C" + suffix)) for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def test_fast_coco_eval_found_exactly_when_detectron2_has_its_extension():
    assert compat.has_fast_coco_eval() == _compiled_detectron2_extension()


@pytest.mark.parametrize("num_per_machine", [1, 3])
def test_core_share(monkeypatch, num_per_machine):
    calls = []
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    previous = torch.get_num_threads()
    try:
        compat._run_with_core_share(lambda *a: calls.append((a, torch.get_num_threads())), num_per_machine, "x", 2)
    finally:
        torch.set_num_threads(previous)
    assert calls == [(("x", 2), 6 // num_per_machine)]
