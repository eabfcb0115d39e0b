"""DePOTR's regression head and losses: one (x, y) and one confidence (a logit, or RLE's scale
sigma) per keypoint query.

Coordinates follow Deformable DETR's box refinement (Zhu et al. 2021): the MLP output is added to
the inverse sigmoid of the query's reference point and squashed by a sigmoid, so predictions stay
in [0, 1] of the crop. (The thesis added the raw output of a Linear to the reference point.)
"""

from typing import Dict

import torch
from torch import nn
from torch.nn import functional as F

from ..deformable_transformer import inverse_sigmoid
from .mlp import MLP
from .outputs import RegressionOutputs, RLEOutputs


class RegressionHead(nn.Module):
    """B crops, K keypoints, n decoder layers, d width."""

    def __init__(
        self,
        hidden_dim: int,
        mlp_layers: int,
        num_decoder_layers: int,
        iter_refine: bool,
        all_layers: bool = False,
        predict_sigma: bool = False,
    ):
        """
        Args:
            hidden_dim: d.
            mlp_layers: layers of the coordinate MLP.
            num_decoder_layers: n.
            iter_refine: one coordinate MLP per decoder layer, which also refines the decoder's
                reference points (Deformable DETR ``with_box_refine``); implies ``all_layers``
                (the MLPs of layers < n-1 learn only from their layers' losses). Otherwise one
                MLP, shared by the layers it is applied to.
            all_layers: predict from every decoder layer, not only the last (deep supervision,
                DETR's auxiliary outputs).
            predict_sigma: predict a scale sigma per keypoint and coordinate (RLE) instead of a
                confidence logit.
        """
        super().__init__()
        self.iter_refine = iter_refine
        self.all_layers = all_layers or iter_refine
        self.predict_sigma = predict_sigma
        num_mlps = num_decoder_layers if iter_refine else 1
        self.coord_mlps = nn.ModuleList(MLP(hidden_dim, hidden_dim, 2, mlp_layers) for _ in range(num_mlps))
        if predict_sigma:
            # RLE's scale (Li et al. 2021: a linear layer and a sigmoid), crop-normalised.
            self.sigma = nn.Linear(hidden_dim, 2)
        else:
            # Confidence that the keypoint is labelled and inside the crop. The thesis has none
            # (its keypoint score was the box score); COCO rescoring needs one.
            self.score = nn.Linear(hidden_dim, 1)
        for mlp in self.coord_mlps:
            # Start at the reference point (DETR / Deformable DETR).
            nn.init.zeros_(mlp.layers[-1].weight)
            nn.init.zeros_(mlp.layers[-1].bias)

    def predict_coords(self, layer: int, hidden: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """hidden: (B, K, d) output of decoder layer ``layer``; reference: (B, K, 2) its reference
        points. Returns (B, K, 2) = sigmoid(MLP(hidden) + inverse_sigmoid(reference)), (x, y) in
        [0, 1] of the crop width / height."""
        mlp = self.coord_mlps[layer if self.iter_refine else 0]
        return (mlp(hidden) + inverse_sigmoid(reference)).sigmoid()

    def forward(self, features: Dict[str, torch.Tensor]) -> RegressionOutputs:
        """
        Args:
            features: "hidden_states" (n, B, K, d), "references" (n, B, K, 2) of the decoder.
        Returns:
            :class:`RegressionOutputs` of the last layer: coords (B, K, 2) (x, y) normalised to
            [0, 1] by the crop width / height (continuous crop pixels / (W, H)) and confidence
            logits (B, K); with ``predict_sigma`` :class:`RLEOutputs`, whose confidence is
            (B, K, 2) scales (sigma_x, sigma_y) in (0, 1), crop-normalised. With ``all_layers``
            also aux_coords (n-1, B, K, 2) and aux_confidence of layers 0 .. n-2.
        """
        hidden, references = features["hidden_states"], features["references"]
        layers = list(range(len(hidden))) if self.all_layers else [len(hidden) - 1]
        coords = torch.stack([self.predict_coords(i, hidden[i], references[i]) for i in layers])
        if self.predict_sigma:
            confidence = self.sigma(hidden[layers]).sigmoid()
        else:
            confidence = self.score(hidden[layers]).squeeze(-1)
        outputs_type = RLEOutputs if self.predict_sigma else RegressionOutputs
        if self.all_layers:
            return outputs_type(coords[-1], confidence[-1], coords[:-1], confidence[:-1])
        return outputs_type(coords[-1], confidence[-1])


def coordinate_loss(coords: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """B crops, K keypoints. Smooth-L1 (L1 when ``beta`` is 0) summed over x and y, weighted per keypoint and divided by
    the number of supervised keypoints clamped to >= 1 (a zero loss that still backpropagates when
    there are none; weight-0 keypoints get an exactly zero gradient).

    Args:
        coords, target: (B, K, 2) crop-normalised (x, y).
        weights: (B, K) in {0, 1}.
        beta: smooth-L1 beta in crop-normalised units (0.01 ~ 2 px of a 192-px-wide crop); 0 is
            the L1 loss (``F.smooth_l1_loss`` with beta 0 is ``F.l1_loss``).
    """
    per_keypoint = F.smooth_l1_loss(coords, target, reduction="none", beta=beta).sum(-1)
    return (per_keypoint * weights).sum() / weights.sum().clamp(min=1)


def score_loss(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """B crops, K keypoints. Binary cross-entropy of the (B, K) confidence logits against the
    (B, K) target weights (labelled and inside the crop), mean over B K clamped to >= 1."""
    loss = F.binary_cross_entropy_with_logits(logits, weights, reduction="sum")
    return loss / max(logits.numel(), 1)
