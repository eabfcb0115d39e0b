from .checkpoint import AtomicDetectionCheckpointer
from .hooks import IterationSeedHook
from .launch import launch
from .trainer import Trainer

__all__ = ["AtomicDetectionCheckpointer", "IterationSeedHook", "Trainer", "launch"]
