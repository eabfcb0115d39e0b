"""2D sine position embedding of DETR (Carion et al. 2020, ``models/position_encoding.py``) with
Deformable DETR's pixel-centre offset (Zhu et al. 2021). Every crop has the same size, so there is
no padding mask: feature pixel i of an axis of length n is at (i + 0.5) / n, exactly what DETR's
cumulative sum over an all-valid mask gives with Deformable DETR's ``- 0.5``.
"""

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """d = 2 num_pos_feats channels: sin/cos of the normalised y then x position, times ``scale``,
    at frequencies ``temperature`` ** (-2 (i // 2) / num_pos_feats)."""

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even (sin/cos pairs), got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, height: int, width: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """Returns the (d, height, width) embedding; channels [0, d/2) encode y, [d/2, d) x."""
        y_embed = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height * self.scale
        x_embed = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_y = self._interleave(y_embed[:, None] / dim_t)  # (height, d/2)
        pos_x = self._interleave(x_embed[:, None] / dim_t)  # (width, d/2)
        pos = torch.cat(
            (pos_y[:, None, :].expand(height, width, -1), pos_x[None, :, :].expand(height, width, -1)), dim=-1
        )
        return pos.permute(2, 0, 1).to(dtype)

    @staticmethod
    def _interleave(angles: Tensor) -> Tensor:
        """(n, f) angles -> sin of the even and cos of the odd columns, interleaved as DETR does."""
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)
