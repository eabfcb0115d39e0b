"""Residual log-likelihood estimation (RLE) for DePOTR's regression head: Li et al., "Human Pose
Regression with Residual Log-likelihood Estimation", ICCV 2021, written from the paper, with the
RealNVP flow of Dinh et al., "Density estimation using Real NVP", ICLR 2017.

Shape letters: B crops, K keypoints. Coordinates are crop-normalised ((x, y) / (W, H)).

Model. Per keypoint the head predicts a location mu = (mu_x, mu_y) and a scale
sigma = (sigma_x, sigma_y) in (0, 1) (a sigmoid). The ground truth mu_g is mu + sigma * xbar, the
normalised residual xbar drawn from a learned density P_phi on R^2, so

    xbar = (mu_g - mu) / sigma                                  (per coordinate)
    -log P(mu_g) = log sigma_x + log sigma_y - log P_phi(xbar).

Residual formulation (the paper's Sec. 3.3): P_phi is a fixed base density Q times a learned
residual, so that training starts from a plain regression loss and learns only the change:

    log P_phi(xbar) = log Q(xbar) + r_phi(xbar),   Q(xbar) = prod_c exp(-|xbar_c|) / 2
                                                   (standard Laplace; its NLL is an L1 loss).

Here Q is the flow's base density: f_phi: R^2 -> R^2 is a RealNVP flow (:class:`RealNVP`) and
P_phi(xbar) = Q(f_phi(xbar)) |det df_phi/dxbar|, so the residual term is

    r_phi(xbar) = log Q(f_phi(xbar)) + log |det df_phi/dxbar| - log Q(xbar).

P_phi is a normalised density for every phi (integral of Q exp(r_phi) = 1: the paper's normaliser
s is exactly 1, where the paper approximates it by 1), and f_phi starts as the identity
(r_phi = 0), so the loss starts as the Laplace NLL sum_c (log sigma_c + |xbar_c| + log 2).

Loss (:class:`RLELoss`), masked like the other losses: with w = ``keypoint_target_weights``
(B, K), L = sum_bk w_bk (-log P(mu_g,bk)) / max(sum_bk w_bk, 1). It can be negative (a density
above 1): it is a log-likelihood, not a distance.

Scale gauge (our one departure from the paper). The likelihood does not fix how the scale is
split between sigma and the flow: sigma -> c sigma with f_phi -> f_phi(c .) gives the same P, and
a flow trained jointly takes the scale over (measured on Laplace(0, 0.05) residuals, Adam lr 1e-2:
from sigma = 0.5 the flow fits the data within ~100 steps and sigma stays at ~0.48). With the
paper's product Q(xbar) G_phi(xbar), G_phi a Gaussian-prior flow and s dropped, it is worse: the
minimum over G_phi is E|mu_g - mu| / sigma + const, which falls as sigma grows (measured: sigma
drifts to the sigmoid's bound, 0.12 -> 0.47 in 3000 steps at lr 1e-3). We fix the gauge by
evaluating the residual term with sigma detached: sigma gets the gradient of
log sigma + |xbar| only, so it learns the Laplace maximum-likelihood scale, the mean absolute
error of the keypoint (of its image: sigma is predicted per crop and keypoint), while mu and the
flow get the gradient of the full likelihood. At the fixed point (sigma = E|mu_g - mu|, P_phi the
density of xbar) P is the true density of mu_g, a maximum of the full likelihood.

Confidence at inference (``RegressionBranch.decode``, as mmpose decodes RLE):
score = 1 - (sigma_x + sigma_y) / 2, in (0, 1) since sigma is a sigmoid; with sigma in
crop-normalised units it is 1 minus the expected absolute error as a fraction of the crop. The
flow is used in training only.
"""

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .mlp import MLP

# sigma is clamped to at least this (crop-normalised, ~2e-4 px of a 192-px crop) so that
# log sigma and xbar stay finite when a sigmoid underflows.
_MIN_SIGMA = 1e-6


def laplace_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Log density of the standard 2-D Laplace distribution (independent coordinates, scale 1):
    z (..., 2) -> (...) = -|z_0| - |z_1| - 2 log 2."""
    return -z.abs().sum(-1) - 2 * math.log(2.0)


class RealNVP(nn.Module):
    """A RealNVP flow f: R^2 -> R^2 with a standard Laplace base density.

    ``num_couplings`` affine couplings alternate which coordinate they change: coupling i keeps
    coordinate a = i mod 2 and maps the other one, b, to x_b exp(s(x_a)) + t(x_a), with
    (s, t) = an MLP of x_a and s squashed by tanh (|s| < 1, as the RLE code bounds it). The
    Jacobian is triangular, log |det| = s. The last MLP layers start at zero: f starts as the
    identity. Default size as the RLE paper's flow (3 pairs of couplings, 64 hidden units).
    """

    def __init__(self, num_couplings: int = 6, hidden_dim: int = 64, mlp_layers: int = 3):
        super().__init__()
        self.couplings = nn.ModuleList(MLP(1, hidden_dim, 2, mlp_layers) for _ in range(num_couplings))
        for mlp in self.couplings:
            nn.init.zeros_(mlp.layers[-1].weight)
            nn.init.zeros_(mlp.layers[-1].bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
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

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The flow's density: x (..., 2) -> log Q(f(x)) + log |det df/dx| (...)."""
        z, log_det = self(x)
        return laplace_log_prob(z) + log_det


class RLELoss(nn.Module):
    """The RLE negative log-likelihood with its learned flow (see the module docstring)."""

    def __init__(self, flow: Optional[RealNVP] = None):
        """
        Args:
            flow: the density of the normalised residual; default a :class:`RealNVP` of the
                paper's size.
        """
        super().__init__()
        self.flow = flow if flow is not None else RealNVP()

    def forward(
        self, coords: torch.Tensor, sigmas: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            coords: (B, K, 2) predicted locations mu, crop-normalised.
            sigmas: (B, K, 2) predicted scales sigma in (0, 1), crop-normalised.
            target: (B, K, 2) ground truth mu_g, crop-normalised.
            weights: (B, K) in {0, 1}; weight-0 keypoints get an exactly zero loss and gradient
                (their residual is replaced by 0 before it reaches the flow).
        Returns:
            The scalar L = sum w (-log P(mu_g)) / max(sum w, 1), computed in float32.
        """
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
