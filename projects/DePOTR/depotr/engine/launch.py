"""Launching training processes: Detectron2's ``launch`` for one process or on GPUs; without CUDA,
``--num-gpus N`` means N gloo processes that share the cores
(:func:`depotr.engine.compat.launch_cpu_processes`; Detectron2 v0.6's ``launch`` cannot do it)."""

from datetime import timedelta
from typing import Callable, Sequence

import torch

from detectron2.engine import launch as detectron2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT

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
    of Detectron2's ``launch``)."""
    on_cpu = num_machines * num_gpus_per_machine > 1 and not torch.cuda.is_available()
    run = launch_cpu_processes if on_cpu else detectron2_launch
    run(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, tuple(args), timeout)
