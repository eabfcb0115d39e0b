"""DePOTR's trainer: Detectron2's ``DefaultTrainer`` with DePOTR's data, optimizer, schedule,
evaluator, atomic checkpoints, CPU-capable DDP and exactly resumable iterations (what differs
between Detectron2 versions is in :mod:`depotr.engine.compat`)."""

import functools
import itertools
import logging
import os
from typing import List, Optional

import torch

from detectron2.config import CfgNode
from detectron2.data import (
    DatasetFromList,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from ..data import DePOTRDatasetMapper, attach_precomputed_boxes_from_cfg, filter_person_annotations
from ..evaluation import build_keypoint_evaluator
from ..modeling.person_detector import PoseWithDetector, build_person_detector
from ..solver import build_lr_scheduler, build_optimizer
from .checkpoint import DePOTRCheckpointer
from .compat import CompatDefaultTrainer, map_dataset
from .hooks import IterationSeedHook
from .run_dir import drop_metrics_after

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """Detectron2's infinite ``TrainingSampler`` started ``start_index`` indices into this
    rank's stream, so that a resumed run sees the batches the uninterrupted run would."""

    def __init__(self, size: int, seed: int, start_index: int = 0):
        super().__init__(size, shuffle=True, seed=seed)
        self._start_index = start_index

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self._start_index, None)


def training_seed(cfg: CfgNode) -> int:
    """The seed shared by all ranks: ``cfg.SEED`` when set (>= 0), else a random shared one."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def load_training_dicts(cfg: CfgNode) -> List[dict]:
    """Dataset dicts of ``DATASETS.TRAIN``, keeping persons with >= 1 labelled keypoint (counts
    of what was dropped, and why, are logged). A ValueError naming the datasets when no person
    is left."""
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    kept, stats = filter_person_annotations(dicts, return_stats=True)
    if not kept:
        raise ValueError(
            f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} has no person to train on: the training filter (non-crowd "
            f"persons with >= 1 labelled keypoint, v > 0) dropped every person of its {len(dicts)} images "
            f"({stats['persons_dropped_crowd']} crowd, {stats['persons_dropped_no_keypoints']} without labelled "
            "keypoints)"
        )
    return kept


class Trainer(CompatDefaultTrainer):
    """Trains and evaluates a DePOTR config (see ``train_net.py``)."""

    # Backbone-only files (ImageNet weights) may start a training run (see DePOTRCheckpointer).
    checkpointer_class = functools.partial(DePOTRCheckpointer, allow_backbone_only=True)

    def __init__(self, cfg: CfgNode):  # noqa: D107
        self._seed = training_seed(cfg)  # build_train_loader's sampler needs it
        super().__init__(cfg)

    def build_hooks(self):
        return [IterationSeedHook(self._seed)] + super().build_hooks()

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:
            if comm.is_main_process():  # the rows the resumed run writes again
                drop_metrics_after(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)
            # Continue the sampler's stream where the checkpointed run stopped.
            self.set_train_loader(self.build_train_loader(self.cfg, start_iter=self.start_iter))

    def build_train_loader(self, cfg: CfgNode, start_iter: int = 0):
        dicts = load_training_dicts(cfg)
        batch_per_rank = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        sampler = ResumableTrainingSampler(len(dicts), seed=self._seed, start_index=start_iter * batch_per_rank)
        # An unreadable image (the mapper returns None) is replaced by another one.
        dataset = map_dataset(DatasetFromList(dicts, copy=False), DePOTRDatasetMapper(cfg, is_train=True))
        return build_detection_train_loader(
            dataset,
            mapper=None,
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=False,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False)
        dicts = attach_precomputed_boxes_from_cfg(cfg, dataset_name, dicts)
        return build_detection_test_loader(
            dicts, mapper=DePOTRDatasetMapper(cfg, is_train=False), num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None):
        """``DefaultTrainer.test``; with ``MODEL.DEPOTR.TEST_BOX_SOURCE`` "detector" the person
        detector of ``MODEL.DEPOTR.DETECTOR`` runs beside ``model`` (``PoseWithDetector``)."""
        if cfg.MODEL.DEPOTR.TEST_BOX_SOURCE == "detector":
            model = PoseWithDetector(build_person_detector(cfg), model, cfg.INPUT.FORMAT)
        return super().test(cfg, model, evaluators)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_keypoint_evaluator(dataset_name, cfg.TEST.KEYPOINT_OKS_SIGMAS, output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)
