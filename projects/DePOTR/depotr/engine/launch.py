"""Launching distributed training on GPUs (Detectron2's ``launch``) or on CPUs (gloo).

One process, or GPUs: Detectron2's own ``launch``. Several processes without CUDA (``--num-gpus
N`` then means N processes): gloo processes that share the cores
(:func:`depotr.engine.compat.launch_cpu_processes`; Detectron2 v0.6's ``launch`` cannot do it).
"""

from datetime import timedelta
from typing import Callable, Sequence

import torch

from detectron2.engine import launch as detectron2_launch

from .compat import launch_cpu_processes

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: Sequence = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Runs ``main_func(*args)`` in ``num_gpus_per_machine`` processes per machine (same
    arguments as Detectron2's ``launch``)."""
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1 or torch.cuda.is_available():
        detectron2_launch(
            main_func,
            num_gpus_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=tuple(args),
            timeout=timeout,
        )
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on one machine; pass tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    launch_cpu_processes(main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, tuple(args), timeout)


def _find_free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
