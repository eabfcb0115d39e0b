"""Every Detectron2-version workaround of DePOTR, in one place.

DePOTR runs on Detectron2 v0.6 (``tools/install.sh``'s default: the PyPI sdist, no C++ extension)
and on upstream main built from source. Main still says ``__version__ == "0.6"``, so each item
detects the behaviour it works around (a feature test) and names the Detectron2 change; the v0.6
branches can go with v0.6. The only DePOTR module that touches private Detectron2 names.

1. ``CompatDefaultTrainer``: ``DefaultTrainer`` with CPU DDP, our checkpointer, the inner trainer's
   optimizer state in checkpoints and the data-loader iterator created eagerly.
2. ``map_dataset``: ``MapDataset`` whose retry of skipped elements works on Python >= 3.11.
3. ``create_local_process_group`` and ``launch_cpu_processes``: multi-process training on CPU.
4. ``has_fast_coco_eval``: whether ``COCOEvaluator(use_fast_impl=True)`` can run.
5. ``checkpoint_file``: the file a checkpoint path names (main reads a URL query off it).
"""

import functools
import inspect
import logging
import os
import random
import weakref
from datetime import timedelta
from typing import Callable, Iterable, Optional
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data.common import MapDataset
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine import launch as detectron2_launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

logger = logging.getLogger(__name__)

__all__ = [
    "CompatDefaultTrainer",
    "checkpoint_file",
    "create_ddp_model",
    "create_local_process_group",
    "has_fast_coco_eval",
    "launch_cpu_processes",
    "map_dataset",
]


# --- 1. DefaultTrainer -------------------------------------------------------------------------


def create_ddp_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DDP when there are several processes, with ``device_ids=None`` on CPU
    (Detectron2's ``create_ddp_model``, v0.6 and main, always passes ``[local_rank]``, which DDP
    rejects for a CPU model)."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


# Main creates SimpleTrainer's data-loader iterator lazily in `run_step` (`_data_loader_iter` is a
# property over `_data_loader_iter_obj`); v0.6 creates it in `__init__`.
_LAZY_DATA_LOADER_ITERATOR = isinstance(inspect.getattr_static(SimpleTrainer, "_data_loader_iter", None), property)
# Main's DefaultTrainer checkpoints its inner trainer's state (optimizer, AMP grad scaler) under
# "_trainer"; v0.6's does not, so a resumed AdamW restarted its moments.
_DEFAULT_TRAINER_SAVES_INNER_TRAINER = "state_dict" in vars(DefaultTrainer)


def start_data_loader(trainer: SimpleTrainer, data_loader: Optional[Iterable] = None) -> None:
    """Creates ``trainer``'s data-loader iterator now, over ``data_loader`` when given (which then
    replaces ``trainer.data_loader``).

    ``iter(DataLoader)`` draws its base seed from torch's global RNG: created lazily in
    ``run_step`` (main), after ``IterationSeedHook`` seeded the iteration, a resumed run's first
    iteration would draw other box jitter than the uninterrupted run; now, as on v0.6, it does not.
    """
    if data_loader is not None:
        trainer.data_loader = data_loader
    if _LAZY_DATA_LOADER_ITERATOR:
        trainer._data_loader_iter_obj = iter(trainer.data_loader)
    elif data_loader is not None:
        trainer._data_loader_iter = iter(data_loader)


class CompatDefaultTrainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer``, built and checkpointed alike on v0.6 and main. Subclasses
    choose the checkpointer with ``checkpointer_class`` and replace the training data with
    :meth:`set_train_loader`."""

    checkpointer_class = DetectionCheckpointer

    def __init__(self, cfg: CfgNode):  # noqa: D107
        # DefaultTrainer.__init__ (v0.6 = main) but for what it hard-wires: the DDP wrap, the
        # checkpointer class and the eager data-loader iterator.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model)
        # SOLVER.AMP.ENABLED: AMPTrainer (float16 autocast, gradient scaler) needs CUDA; on a CPU the
        # model runs its keypoint branch under bfloat16 autocast itself (TopDownPoseEstimator).
        cuda_amp = cfg.SOLVER.AMP.ENABLED and torch.device(cfg.MODEL.DEVICE).type == "cuda"
        if cfg.SOLVER.AMP.ENABLED and not cuda_amp:  # here, where log.txt is set up (not at config load)
            logger.info(
                "SOLVER.AMP.ENABLED on %s: the keypoint branch trains under bfloat16 autocast", cfg.MODEL.DEVICE
            )
        self._trainer = (AMPTrainer if cuda_amp else SimpleTrainer)(model, data_loader, optimizer)
        start_data_loader(self._trainer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = self.checkpointer_class(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def set_train_loader(self, data_loader) -> None:
        """Trains on ``data_loader`` from now on (its iterator is created at once)."""
        start_data_loader(self._trainer, data_loader)

    @property
    def step_trainer(self):
        """The ``SimpleTrainer`` / ``AMPTrainer`` that runs the steps (benchmarks time them)."""
        return self._trainer

    if not _DEFAULT_TRAINER_SAVES_INNER_TRAINER:  # v0.6: main's key and format

        def state_dict(self) -> dict:
            return dict(super().state_dict(), _trainer=self._trainer.state_dict())

        def load_state_dict(self, state_dict: dict) -> None:
            super().load_state_dict(state_dict)
            self._trainer.load_state_dict(state_dict["_trainer"])


# --- 2. MapDataset -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _map_dataset_retry_works() -> bool:
    """Whether Detectron2's ``MapDataset`` replaces an element its map skipped (None) by another."""
    try:
        return MapDataset([0, 1], lambda x: x or None)[0] == 1
    except TypeError:  # v0.6 on Python >= 3.11: "Population must be a sequence"
        return False


class _SetSamplingRandom(random.Random):
    """``random.Random`` whose ``sample`` takes v0.6 ``MapDataset``'s set of fallback indices."""

    def sample(self, population, k, **kwargs):
        if not population:
            raise RuntimeError("the mapper returned None for every element tried")
        return super().sample(sorted(population), k, **kwargs)


class _RetryMapDataset(MapDataset):
    """v0.6's ``MapDataset``, whose retry draws with ``random.sample(set, k=1)``: a ``TypeError``
    since Python 3.11, so the first unreadable image crashed training (main samples a list)."""

    def __init__(self, dataset: torch.utils.data.Dataset, map_func: Callable):
        super().__init__(dataset, map_func)
        self._rng = _SetSamplingRandom(42)


def map_dataset(dataset: torch.utils.data.Dataset, map_func: Callable) -> MapDataset:
    """Detectron2's ``MapDataset`` over a map-style ``dataset``: an element for which ``map_func``
    returns None is replaced by a random other one. Use it with
    ``build_detection_train_loader(dataset=map_dataset(...), mapper=None, sampler=...)``."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError("map_dataset wraps map-style datasets; use MapDataset for iterable ones")
    return (MapDataset if _map_dataset_retry_works() else _RetryMapDataset)(dataset, map_func)


# --- 3. Processes on CPU -----------------------------------------------------------------------


def create_local_process_group(num_per_machine: int) -> None:
    """Creates Detectron2's group of this machine's processes (``comm.get_local_rank`` needs it);
    call it in every process after ``init_process_group``."""
    if hasattr(comm, "create_local_process_group"):  # main
        comm.create_local_process_group(num_per_machine)
        return
    machine_rank = dist.get_rank() // num_per_machine  # v0.6: its launch() sets the global itself
    for i in range(dist.get_world_size() // num_per_machine):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


@functools.lru_cache(maxsize=None)
def _detectron2_launch_runs_on_cpu() -> bool:
    """Whether Detectron2's ``launch`` starts processes without CUDA (main falls back to gloo;
    v0.6 asserts CUDA and uses NCCL), read from its source (unreadable: no)."""
    try:
        return "gloo" in inspect.getsource(inspect.getmodule(detectron2_launch)).lower()
    except (OSError, TypeError):
        return False


def _run_with_core_share(main_func: Callable, num_per_machine: int, *args) -> None:
    """Runs ``main_func(*args)`` with this process' share of the machine's cores."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_per_machine))
    main_func(*args)


def launch_cpu_processes(
    main_func: Callable,
    num_per_machine: int,
    num_machines: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    """Runs ``main_func(*args)`` in ``num_per_machine`` gloo processes on this machine, each with
    its share of the cores (Detectron2's ``launch`` gives each all of them). ``dist_url`` "auto":
    a free local port (one machine only)."""
    worker = functools.partial(_run_with_core_share, main_func, num_per_machine)
    if _detectron2_launch_runs_on_cpu():
        detectron2_launch(worker, num_per_machine, num_machines, machine_rank, dist_url, args, timeout)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on one machine; pass tcp://HOST:PORT")
        from detectron2.engine.launch import _find_free_port  # v0.6 = main

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    world_size = num_machines * num_per_machine
    args = (worker, world_size, num_per_machine, machine_rank, dist_url, args, timeout)
    mp.spawn(_cpu_worker, nprocs=num_per_machine, args=args, daemon=False)


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    """v0.6's ``_distributed_worker`` with gloo and without CUDA."""
    rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout)
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    create_local_process_group(num_per_machine)
    comm.synchronize()
    main_func(*args)


# --- 4. COCOEvaluator --------------------------------------------------------------------------

# Detectron2's compiled COCO evaluation (`COCOEvaluator(use_fast_impl=True)`), in `detectron2._C`
# when built with its C++ extension; not in the `_C` stand-in of tools/install.sh's v0.6 route.
FAST_COCO_EVAL_FUNCTIONS = ("COCOevalEvaluateImages", "COCOevalAccumulate", "InstanceAnnotation")


def has_fast_coco_eval() -> bool:
    """Whether Detectron2's compiled COCO evaluation is there (``FAST_COCO_EVAL_FUNCTIONS``)."""
    try:
        from detectron2 import _C

        return all(callable(getattr(_C, name)) for name in FAST_COCO_EVAL_FUNCTIONS)
    except (ImportError, AttributeError, NotImplementedError):  # the stand-in raises NotImplementedError
        return False


# --- 5. Checkpoint paths -----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _checkpointer_reads_url_query() -> bool:
    """Whether Detectron2's ``DetectionCheckpointer.load`` reads a URL query off its path (main
    keeps it in ``_parsed_url_during_load`` for ``_load_file``; v0.6 has no such attribute)."""
    return "_parsed_url_during_load" in vars(DetectionCheckpointer(torch.nn.Module()))


def checkpoint_file(path: str) -> str:
    """The file (or URL) that Detectron2's ``DetectionCheckpointer.load(path)`` reads: on main,
    ``path`` without its URL query (``model.pth?matching_heuristics=True`` reads ``model.pth`` with
    its weight names matched by suffix), stripped as main strips it; on v0.6, which reads no query,
    ``path`` itself (fvcore then finds no file ``model.pth?matching_heuristics=True``)."""
    if not _checkpointer_reads_url_query():
        return path
    return urlparse(path)._replace(query="").geturl()
