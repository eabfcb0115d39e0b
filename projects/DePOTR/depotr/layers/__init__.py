"""DePOTR layers. Imports torch only (never Detectron2), so that the operator builds and tests on
a machine with PyTorch alone."""

# MSDeformAttn first: importing the submodule ms_deform_attn binds that name on this package,
# and the function ms_deform_attn imported after it must win (as detectron2.layers does for nms).
from .ms_deform_attn import MSDeformAttn, at_least_float32, autocast_off, autocast_to, mixed_precision_msda_inputs
from .ms_deform_attn_op import BACKEND_ENV_VAR, check_ms_deform_attn_inputs, ms_deform_attn, msda_backend
from .ms_deform_attn_reference import ms_deform_attn_reference

__all__ = [
    "BACKEND_ENV_VAR",
    "MSDeformAttn",
    "at_least_float32",
    "autocast_off",
    "autocast_to",
    "check_ms_deform_attn_inputs",
    "mixed_precision_msda_inputs",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "msda_backend",
]
