"""The MLP of DETR's box head (Carion et al. 2020, ``models/detr.py::MLP``)."""

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """num_layers Linear layers with ReLU between them: (..., in_dim) -> (..., out_dim). zero_last:
    the last layer starts at zero (the MLP at the zero map)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, zero_last: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"an MLP needs at least one layer, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)
