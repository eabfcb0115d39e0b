"""The tests of this folder need a process started with TRITON_INTERPRET=1 (see their module
docstring); in any other process they are not collected.

Every test here also runs under a bounds check of the interpreter: each load, store and atomic
whose mask is set must address memory inside one of the tensors passed to the kernel launch. A
masked-in access outside them reads or writes memory that belongs to something else: on a GPU an
illegal address or silent corruption, under the interpreter a segfault only when the page happens
to be unmapped (which is how such a bug first showed, in one CI run out of many)."""

import os

import numpy as np
import pytest

collect_ignore_glob = [] if os.environ.get("TRITON_INTERPRET") == "1" else ["test_*.py"]


class OutOfBoundsAccess(AssertionError):
    pass


def tensor_ranges(args) -> list[tuple[int, int]]:
    """[start, end) byte ranges of the tensor arguments of one launch."""
    return [
        (arg.data_ptr(), arg.data_ptr() + arg.numel() * arg.element_size())
        for arg in args
        if hasattr(arg, "data_ptr") and hasattr(arg, "numel")
    ]


def check_addresses(ranges, pointers, mask, what: str) -> None:
    """Raise OutOfBoundsAccess if a masked-in element of ``pointers`` (an interpreter
    TensorHandle of addresses) is not wholly inside one of ``ranges``."""
    addresses = np.asarray(pointers.data, dtype=np.uint64)
    if mask is not None:
        addresses = addresses[np.broadcast_to(np.asarray(mask.data, dtype=bool), addresses.shape)]
    size = np.uint64(pointers.get_element_ty().primitive_bitwidth // 8)
    inside = np.zeros(addresses.shape, dtype=bool)
    for start, end in ranges:
        inside |= (addresses >= np.uint64(start)) & (addresses + size <= np.uint64(end))
    if not inside.all():
        raise OutOfBoundsAccess(
            f"{what}: {int((~inside).sum())} of {addresses.size} masked-in addresses lie outside "
            f"every tensor argument of the launch"
        )


@pytest.fixture(autouse=True)
def bounds_checked_interpreter(monkeypatch):
    from triton.runtime import interpreter

    launches = []  # a stack: the ranges of the launch being interpreted
    run = interpreter.GridExecutor.__call__

    def checked_run(self, *args, **kwargs):
        launches.append(tensor_ranges(list(args) + list(kwargs.values())))
        try:
            return run(self, *args, **kwargs)
        finally:
            launches.pop()

    monkeypatch.setattr(interpreter.GridExecutor, "__call__", checked_run)
    builder = interpreter.InterpreterBuilder
    load, store, atomic = builder.create_masked_load, builder.create_masked_store, builder.create_atomic_rmw

    def checked_load(self, ptrs, mask, *args):
        check_addresses(launches[-1], ptrs, mask, "tl.load")
        return load(self, ptrs, mask, *args)

    def checked_store(self, ptrs, value, mask, *args):
        check_addresses(launches[-1], ptrs, mask, "tl.store")
        return store(self, ptrs, value, mask, *args)

    def checked_atomic(self, op, ptr, val, mask, *args):
        check_addresses(launches[-1], ptr, mask, "tl.atomic_*")
        return atomic(self, op, ptr, val, mask, *args)

    monkeypatch.setattr(builder, "create_masked_load", checked_load)
    monkeypatch.setattr(builder, "create_masked_store", checked_store)
    monkeypatch.setattr(builder, "create_atomic_rmw", checked_atomic)
