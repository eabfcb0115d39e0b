"""DePOTR's regression head: one (x, y) and one confidence (a logit, or RLE's scale sigma) per
keypoint query.

Coordinates follow Deformable DETR's box refinement (Zhu et al. 2021): the MLP output is added to
the inverse sigmoid of the query's reference point and squashed by a sigmoid, so predictions stay
in [0, 1] of the crop. (The thesis added the raw output of a Linear to the reference point.)
"""

from typing import Dict

import torch
from torch import Tensor, nn

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
            hidden_dim: d. mlp_layers: layers of the coordinate MLP. num_decoder_layers: n.
            iter_refine: one coordinate MLP per decoder layer, which also refines the decoder's
                reference points (Deformable DETR ``with_box_refine``); implies ``all_layers``.
                Otherwise one MLP, shared by the layers it is applied to.
            all_layers: predict from every decoder layer, not only the last (deep supervision).
            predict_sigma: predict a scale sigma per keypoint and coordinate (RLE) instead of a
                confidence logit.
        """
        super().__init__()
        self.iter_refine = iter_refine
        self.all_layers = all_layers or iter_refine
        self.predict_sigma = predict_sigma
        num_mlps = num_decoder_layers if iter_refine else 1
        # zero_last: start at the reference point (DETR / Deformable DETR)
        self.coord_mlps = nn.ModuleList(
            MLP(hidden_dim, hidden_dim, 2, mlp_layers, zero_last=True) for _ in range(num_mlps)
        )
        if predict_sigma:
            self.sigma = nn.Linear(hidden_dim, 2)  # RLE's scale: a linear layer and a sigmoid
        else:
            # Confidence that the keypoint is labelled and inside the crop. The thesis has none
            # (its keypoint score was the box score); COCO rescoring needs one.
            self.score = nn.Linear(hidden_dim, 1)

    def predict_coords(self, layer: int, hidden: Tensor, reference: Tensor) -> Tensor:
        """hidden: (B, K, d) output of decoder layer ``layer``; reference: (B, K, 2) its reference
        points. Returns (B, K, 2) = sigmoid(MLP(hidden) + inverse_sigmoid(reference)), (x, y) in
        [0, 1] of the crop width / height."""
        mlp = self.coord_mlps[layer if self.iter_refine else 0]
        return (mlp(hidden) + inverse_sigmoid(reference)).sigmoid()

    def forward(self, features: Dict[str, Tensor]) -> RegressionOutputs:
        """features: "hidden_states" (n, B, K, d), "references" (n, B, K, 2) of the decoder.
        Returns the last layer's :class:`RegressionOutputs` (:class:`RLEOutputs` with
        ``predict_sigma``), with ``all_layers`` also the auxiliary outputs of layers 0 .. n-2."""
        hidden, references = features["hidden_states"], features["references"]
        layers = list(range(len(hidden))) if self.all_layers else [len(hidden) - 1]
        coords = torch.stack([self.predict_coords(i, hidden[i], references[i]) for i in layers])
        if self.predict_sigma:
            confidence = self.sigma(hidden[layers]).sigmoid()
        else:
            confidence = self.score(hidden[layers]).squeeze(-1)
        aux = (coords[:-1], confidence[:-1]) if self.all_layers else ()
        return (RLEOutputs if self.predict_sigma else RegressionOutputs)(coords[-1], confidence[-1], *aux)
