"""Residual log-likelihood estimation (RLE; Li et al., ICCV 2021) for DePOTR's regression head,
with a RealNVP flow (Dinh et al., ICLR 2017). B crops, K keypoints; coordinates crop-normalised.

Per keypoint the head predicts mu and sigma in (0, 1); the normalised residual
xbar = (mu_g - mu) / sigma has the density P_phi(xbar) = Q(f(xbar)) |det df/dxbar|, Q the standard
2-D Laplace and f a RealNVP flow that starts as the identity, so

    -log P(mu_g) = log sigma_x + log sigma_y - log P_phi(xbar)

starts as the Laplace NLL (an L1 loss). The flow's residual term is evaluated with sigma detached,
so that sigma learns the keypoint's mean absolute error (the likelihood leaves the split of the
scale between sigma and the flow free). Derivation and measurements: docs/models.md, "The RLE loss".
"""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .mlp import MLP

# sigma is clamped to at least this (crop-normalised, ~2e-4 px of a 192-px crop) so that
# log sigma and xbar stay finite when a sigmoid underflows.
_MIN_SIGMA = 1e-6


def laplace_log_prob(z: Tensor) -> Tensor:
    """Log density of the standard 2-D Laplace distribution (independent coordinates, scale 1):
    z (..., 2) -> (...) = -|z_0| - |z_1| - 2 log 2."""
    return -z.abs().sum(-1) - 2 * math.log(2.0)


class RealNVP(nn.Module):
    """A RealNVP flow f: R^2 -> R^2 with a standard Laplace base density: coupling i keeps
    coordinate a = i mod 2 and maps the other, b, to x_b exp(s(x_a)) + t(x_a), (s, t) an MLP of
    x_a with s squashed by tanh; log |det| = sum s. The last MLP layers start at zero (f = identity).
    Default size as the RLE paper's flow."""

    def __init__(self, num_couplings: int = 6, hidden_dim: int = 64, mlp_layers: int = 3):
        super().__init__()
        self.couplings = nn.ModuleList(MLP(1, hidden_dim, 2, mlp_layers, zero_last=True) for _ in range(num_couplings))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (..., 2). Returns z = f(x) (..., 2) and log |det df/dx| (...)."""
        log_det = x.new_zeros(x.shape[:-1])
        for i, mlp in enumerate(self.couplings):
            keep = i % 2
            s, t = mlp(x[..., keep : keep + 1]).unbind(-1)
            s = torch.tanh(s)
            changed = x[..., 1 - keep] * s.exp() + t
            x = torch.stack((x[..., 0], changed) if keep == 0 else (changed, x[..., 1]), dim=-1)
            log_det = log_det + s
        return x, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """The flow's density: x (..., 2) -> log Q(f(x)) + log |det df/dx| (...)."""
        z, log_det = self(x)
        return laplace_log_prob(z) + log_det


class RLELoss(nn.Module):
    """The RLE negative log-likelihood with its learned flow of the normalised residual (default a
    :class:`RealNVP` of the paper's size)."""

    def __init__(self, flow: Optional[RealNVP] = None):
        super().__init__()
        self.flow = flow if flow is not None else RealNVP()

    def forward(self, coords: Tensor, sigmas: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        """coords, sigmas, target: (B, K, 2) mu, sigma in (0, 1) and mu_g; weights: (B, K) in
        {0, 1} (weight-0 residuals are replaced by 0 before the flow: exactly zero loss and
        gradient). Returns L = sum w (-log P(mu_g)) / max(sum w, 1), computed in float32."""
        with torch.autocast(coords.device.type, enabled=False):
            coords, target, weights = coords.float(), target.float(), weights.float()
            sigmas = sigmas.float().clamp(min=_MIN_SIGMA)
            supervised = weights[..., None] > 0
            error = torch.where(supervised, target - coords, torch.zeros_like(coords))
            residual = error / sigmas  # xbar
            residual_for_flow = error / sigmas.detach()  # same values; no gradient to sigma
            base_nll = sigmas.log().sum(-1) - laplace_log_prob(residual)
            residual_log_lik = self.flow.log_prob(residual_for_flow) - laplace_log_prob(residual_for_flow)
            nll = base_nll - residual_log_lik  # (B, K) = -log P(mu_g)
            return (nll * weights).sum() / weights.sum().clamp(min=1)
