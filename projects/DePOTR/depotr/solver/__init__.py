from .lr_scheduler import apply_epoch_schedule, build_lr_scheduler, check_training_schedule
from .optimizer import build_optimizer, build_param_groups

__all__ = [
    "apply_epoch_schedule",
    "build_lr_scheduler",
    "build_optimizer",
    "build_param_groups",
    "check_training_schedule",
]
