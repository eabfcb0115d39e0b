"""Every Detectron2-version workaround of DePOTR, in one place.

DePOTR runs on Detectron2 v0.6 (``tools/install.sh``'s default route: the PyPI sdist, no C++
extension) and on upstream main built from source (``DEPOTR_DETECTRON2=...``). Main still says
``detectron2.__version__ == "0.6"``, so each item here detects the behaviour it works around
(a feature test) instead of reading the version, and names the Detectron2 change. This is the
only DePOTR module that touches private Detectron2 names; once v0.6 is dropped, the v0.6
branches below can go.

Items:
1. ``CompatDefaultTrainer``: ``DefaultTrainer.__init__`` replica (CPU DDP, our checkpointer),
   the trainer's optimizer state in checkpoints, and the data-loader iterator created eagerly.
2. ``map_dataset``: ``MapDataset`` whose retry of skipped elements works on Python >= 3.11.
3. ``create_local_process_group`` and ``launch_cpu_processes``: multi-process training on CPU.
4. ``has_fast_coco_eval``: whether ``COCOEvaluator(use_fast_impl=True)`` can run.
"""

import functools
import inspect
import logging
import os
import weakref
from datetime import timedelta
from typing import Callable, Iterable, Optional

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
    "create_ddp_model",
    "create_local_process_group",
    "has_fast_coco_eval",
    "launch_cpu_processes",
    "map_dataset",
]


# --- 1. DefaultTrainer -------------------------------------------------------------------------


def create_ddp_model(model: torch.nn.Module) -> torch.nn.Module:
    """Wraps ``model`` in DDP when there are several processes: on GPU with this process'
    device, on CPU with ``device_ids=None``.

    Detectron2's ``create_ddp_model`` (v0.6 and main 02b5c4e alike) always passes
    ``device_ids=[local_rank]``, which DDP rejects for a CPU model."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


# Detectron2 main creates SimpleTrainer's data-loader iterator lazily, on the first
# `next(self._data_loader_iter)` inside `run_step` (`_data_loader_iter` became a property over
# `_data_loader_iter_obj`, with `reset_data_loader`); v0.6 creates it in `__init__`.
_LAZY_DATA_LOADER_ITERATOR = isinstance(inspect.getattr_static(SimpleTrainer, "_data_loader_iter", None), property)

# Detectron2 main's DefaultTrainer checkpoints its inner trainer's state (optimizer, AMP grad
# scaler) under "_trainer"; v0.6's has no state_dict, so a resumed AdamW restarted its moments.
_DEFAULT_TRAINER_SAVES_INNER_TRAINER = "state_dict" in vars(DefaultTrainer)


def start_data_loader(trainer: SimpleTrainer, data_loader: Optional[Iterable] = None) -> None:
    """Creates ``trainer``'s data-loader iterator now, over ``data_loader`` when given (which
    then replaces ``trainer.data_loader``).

    ``iter(DataLoader)`` draws its base seed from torch's global RNG. Created lazily inside
    ``run_step`` (main), that draw would come after ``IterationSeedHook`` seeded the iteration,
    so a resumed run's first iteration would draw different box jitter than the uninterrupted
    run; created now, it happens before any iteration is seeded, as on v0.6.
    """
    if data_loader is not None:
        trainer.data_loader = data_loader
    if _LAZY_DATA_LOADER_ITERATOR:
        trainer._data_loader_iter_obj = iter(trainer.data_loader)
    elif data_loader is not None:
        trainer._data_loader_iter = iter(data_loader)


class CompatDefaultTrainer(DefaultTrainer):
    """Detectron2's ``DefaultTrainer``, built and checkpointed the same way on v0.6 and main.

    Subclasses choose the checkpointer with ``checkpointer_class`` and replace the training data
    with :meth:`set_train_loader`.
    """

    checkpointer_class = DetectionCheckpointer

    def __init__(self, cfg: CfgNode):  # noqa: D107
        # Replica of DefaultTrainer.__init__ (the same in v0.6 and main 02b5c4e) but for the DDP
        # wrap (create_ddp_model above), the checkpointer class and the eager data-loader
        # iterator (start_data_loader): DefaultTrainer.__init__ hard-wires all three.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
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
        """The ``SimpleTrainer`` / ``AMPTrainer`` that runs the steps: its ``model``,
        ``optimizer`` and ``data_loader`` (benchmarks time steps with them)."""
        return self._trainer

    if not _DEFAULT_TRAINER_SAVES_INNER_TRAINER:
        # v0.6: the same key and format as main's DefaultTrainer.state_dict.
        def state_dict(self) -> dict:
            state = super().state_dict()
            state["_trainer"] = self._trainer.state_dict()
            return state

        def load_state_dict(self, state_dict: dict) -> None:
            super().load_state_dict(state_dict)
            self._trainer.load_state_dict(state_dict["_trainer"])


# --- 2. MapDataset -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _map_dataset_retry_works() -> bool:
    """Whether Detectron2's ``MapDataset`` replaces an element its map skipped (returned None)
    with another one, tried on a two-element dataset."""
    dataset = MapDataset([0, 1], _skip_zero)
    try:
        return dataset[0] == 1
    except TypeError:  # v0.6 on Python >= 3.11: "Population must be a sequence"
        return False


def _skip_zero(x: int) -> Optional[int]:
    return None if x == 0 else x


class _RetryMapDataset(MapDataset):
    """v0.6's ``MapDataset`` with a retry that works on Python >= 3.11.

    Detectron2 v0.6 draws the replacement with ``random.sample(set, k=1)``, a ``TypeError``
    since Python 3.11 (sets are no longer sampled), so the first skipped (unreadable) image
    crashes training; main samples from ``list(set)``.
    """

    def __getitem__(self, idx: int):
        retry_count = 0
        cur_idx = int(idx)
        while True:
            data = self._map_func(self._dataset[cur_idx])
            if data is not None:
                self._fallback_candidates.add(cur_idx)
                return data
            retry_count += 1
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError(f"the mapper returned None for every element tried (last index {cur_idx})")
            cur_idx = self._rng.choice(sorted(self._fallback_candidates))
            if retry_count >= 3:
                logger.warning("Failed to map index %d, retry count %d", idx, retry_count)


def map_dataset(dataset: torch.utils.data.Dataset, map_func: Callable) -> MapDataset:
    """Detectron2's ``MapDataset`` over a map-style ``dataset``: an element for which
    ``map_func`` returns None is replaced by a random other one. Use it with
    ``build_detection_train_loader(dataset=map_dataset(...), mapper=None, sampler=...)``."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError("map_dataset wraps map-style datasets; use MapDataset for iterable ones")
    return (MapDataset if _map_dataset_retry_works() else _RetryMapDataset)(dataset, map_func)


# --- 3. Processes on CPU -----------------------------------------------------------------------


def create_local_process_group(num_per_machine: int) -> None:
    """Creates Detectron2's group of the processes on this machine (``comm.get_local_rank``
    needs it); call it in every process after ``init_process_group``."""
    if hasattr(comm, "create_local_process_group"):  # main: public since 2022
        comm.create_local_process_group(num_per_machine)
        return
    # v0.6: its launch() sets the module global itself.
    world_size = dist.get_world_size()
    machine_rank = dist.get_rank() // num_per_machine
    for i in range(world_size // num_per_machine):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


@functools.lru_cache(maxsize=None)
def _detectron2_launch_runs_on_cpu() -> bool:
    """Whether Detectron2's ``launch`` starts several processes without CUDA: main's worker
    falls back to gloo without a GPU; v0.6's asserts CUDA and hard-codes NCCL. Read from its
    source (an unreadable source counts as no: our own launcher works everywhere)."""
    try:
        source = inspect.getsource(inspect.getmodule(detectron2_launch))
    except (OSError, TypeError):
        return False
    return "gloo" in source.lower()


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
    """Runs ``main_func(*args)`` in ``num_per_machine`` gloo processes on this machine, each
    with its share of the cores (Detectron2's ``launch`` gives each all of them)."""
    worker = functools.partial(_run_with_core_share, main_func, num_per_machine)
    if _detectron2_launch_runs_on_cpu():
        detectron2_launch(
            worker,
            num_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=timeout,
        )
        return
    world_size = num_machines * num_per_machine
    mp.spawn(
        _cpu_worker,
        nprocs=num_per_machine,
        args=(worker, world_size, num_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    """v0.6's ``_distributed_worker`` with gloo and without CUDA."""
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout)
    except Exception:
        logger.error("Process group URL: %s", dist_url)
        raise
    create_local_process_group(num_per_machine)
    comm.synchronize()
    main_func(*args)


# --- 4. COCOEvaluator --------------------------------------------------------------------------

# Detectron2's compiled COCO evaluation (`evaluation/fast_eval_api.py`, behind
# `COCOEvaluator(use_fast_impl=True)`), in `detectron2._C` when Detectron2 is built with its C++
# extension; not in the `_C` stand-in of tools/install.sh's v0.6 route.
FAST_COCO_EVAL_FUNCTIONS = ("COCOevalEvaluateImages", "COCOevalAccumulate", "InstanceAnnotation")


def has_fast_coco_eval() -> bool:
    """Whether Detectron2's compiled COCO evaluation is there (``FAST_COCO_EVAL_FUNCTIONS``)."""
    try:
        from detectron2 import _C

        return all(callable(getattr(_C, name)) for name in FAST_COCO_EVAL_FUNCTIONS)
    except (ImportError, AttributeError, NotImplementedError):  # the stand-in raises NotImplementedError
        return False
