"""DePOTR's trainer: Detectron2's ``DefaultTrainer`` with DePOTR's data, optimizer, schedule,
evaluator, atomic checkpoints, CPU-capable DDP and exactly resumable iterations."""
import itertools
import logging
import os
import weakref
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
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data import DePOTRDatasetMapper, RetryMapDataset, attach_precomputed_boxes_from_cfg, filter_person_annotations
from ..evaluation import build_keypoint_evaluator
from ..solver import build_lr_scheduler, build_optimizer
from .checkpoint import DePOTRCheckpointer
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


def create_ddp_model(model: torch.nn.Module) -> torch.nn.Module:
    """Wraps ``model`` in DDP when there are several processes: on GPU with this process'
    device, on CPU with ``device_ids=None`` (Detectron2 v0.6 always passes a device id)."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


class Trainer(DefaultTrainer):
    """Trains and evaluates a DePOTR config (see ``train_net.py``)."""

    def __init__(self, cfg: CfgNode):  # noqa: D107 - mirrors DefaultTrainer.__init__
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        self._seed = training_seed(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DePOTRCheckpointer(
            model, cfg.OUTPUT_DIR, allow_backbone_only=True, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        return [IterationSeedHook(self._seed)] + super().build_hooks()

    # Detectron2 v0.6's DefaultTrainer checkpoints no optimizer state (later versions do, the
    # same way): without it a resumed AdamW restarts its moments.
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:
            if comm.is_main_process():  # the rows the resumed run writes again
                drop_metrics_after(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)
            # Continue the sampler's stream where the checkpointed run stopped.
            self._set_data_loader(self.build_train_loader(self.cfg, start_iter=self.start_iter))

    def _set_data_loader(self, data_loader) -> None:
        trainer = self._trainer
        trainer.data_loader = data_loader
        if isinstance(getattr(type(trainer), "_data_loader_iter", None), property):
            trainer._data_loader_iter_obj = None  # Detectron2 after v0.6: created lazily
        else:
            trainer._data_loader_iter = iter(data_loader)

    def build_train_loader(self, cfg: CfgNode, start_iter: int = 0):
        dicts = load_training_dicts(cfg)
        batch_per_rank = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        sampler = ResumableTrainingSampler(len(dicts), seed=self._seed, start_index=start_iter * batch_per_rank)
        # RetryMapDataset: an unreadable image (mapper returns None) is replaced by another one.
        dataset = RetryMapDataset(DatasetFromList(dicts, copy=False), DePOTRDatasetMapper(cfg, is_train=True))
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
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_keypoint_evaluator(dataset_name, cfg.TEST.KEYPOINT_OKS_SIGMAS, output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

