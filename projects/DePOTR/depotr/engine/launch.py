"""Launching distributed training on GPUs (Detectron2's ``launch``) or on CPUs (gloo).

Detectron2 v0.6's ``launch`` asserts CUDA and hard-codes NCCL for more than one process.
On a machine without CUDA we start the processes ourselves with the gloo backend; everything
else (one process, or GPUs) goes to Detectron2's own ``launch``. On CPU, ``--num-gpus N``
means N processes.
"""
import logging
import os
from datetime import timedelta
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as detectron2_launch
from detectron2.utils import comm

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
            main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
            dist_url=dist_url, args=tuple(args), timeout=timeout,
        )
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on one machine; pass tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
    )


def _find_free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout)
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    _create_local_process_group(num_per_machine, machine_rank, world_size)
    # Share the cores between the processes of this machine.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_per_machine))
    comm.synchronize()
    main_func(*args)


def _create_local_process_group(num_per_machine: int, machine_rank: int, world_size: int) -> None:
    if hasattr(comm, "create_local_process_group"):  # Detectron2 after v0.6
        comm.create_local_process_group(num_per_machine)
        return
    for i in range(world_size // num_per_machine):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
