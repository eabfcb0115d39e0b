from .checkpoint import DePOTRCheckpointer
from .hooks import IterationSeedHook
from .launch import launch
from .trainer import Trainer

__all__ = ["DePOTRCheckpointer", "IterationSeedHook", "Trainer", "launch"]
