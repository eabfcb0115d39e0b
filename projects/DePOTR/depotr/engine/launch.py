"""Launching training processes: Detectron2's ``launch`` for one process or on GPUs; without CUDA,
``--num-gpus N`` means N gloo processes that share the cores
(:func:`depotr.engine.compat.launch_cpu_processes`; Detectron2 v0.6's ``launch`` cannot do it).
A :class:`~depotr.cli.ConfigError` in any process is raised by :func:`launch` itself, so that
``run_main`` prints it as one line, as in a single process."""

import functools
import multiprocessing
from datetime import timedelta
from multiprocessing.queues import SimpleQueue
from typing import Callable, Sequence

import torch
from torch.multiprocessing.spawn import ProcessException

from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT

from ..cli import ConfigError
from .compat import launch_cpu_processes


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: Sequence = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Runs ``main_func(*args)`` in ``num_gpus_per_machine`` processes per machine (the arguments
    of Detectron2's ``launch``). A ``ConfigError`` of a launched process is raised here with its
    message; any other error of one is ``torch.multiprocessing``'s ``ProcessRaisedException``
    holding its traceback."""
    launch_args = (num_gpus_per_machine, num_machines, machine_rank, dist_url, tuple(args), timeout)
    if num_machines * num_gpus_per_machine == 1:  # Detectron2's runs main_func here: its errors reach the caller
        detectron2_launch(main_func, *launch_args)
        return
    run = detectron2_launch if torch.cuda.is_available() else launch_cpu_processes
    # Read once every process has ended: torch reports only the process that exited first, which
    # may be one that lost its peer (a gloo or NCCL error) rather than the one that refused.
    config_errors = multiprocessing.get_context("spawn").SimpleQueue()
    worker = functools.partial(_report_config_error, config_errors, main_func)
    try:
        run(worker, *launch_args)
    except ProcessException:
        if config_errors.empty():
            raise
        raise ConfigError(config_errors.get()) from None
    finally:
        config_errors.close()


def _report_config_error(config_errors: SimpleQueue, main_func: Callable, *args) -> None:
    """Runs ``main_func(*args)``; the message of a ``ConfigError`` also goes to ``config_errors``."""
    try:
        main_func(*args)
    except ConfigError as e:
        config_errors.put(str(e))
        raise
