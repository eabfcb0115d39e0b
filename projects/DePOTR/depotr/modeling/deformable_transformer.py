"""Deformable transformer encoder and decoder of Deformable DETR (Zhu et al. 2021,
``models/deformable_transformer.py``), post-norm layers as in DETR (Carion et al. 2020):
single-stage, 2-D reference points, a learned reference point per query
(``sigmoid(Linear(query_pos))``), optional iterative reference refinement (``with_box_refine``).
All crops of a batch have the same size, so there are no padding masks and the valid ratios are 1;
the valid-ratio formulas are kept so that the reference points read as in Deformable DETR.
"""

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from depotr.layers import MSDeformAttn, at_least_float32, autocast_off

from .position_encoding import PositionEmbeddingSine

# refine(layer index, (B, K, d) layer output, (B, K, 2) its reference points) -> refined (B, K, 2).
RefineFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Elementwise logit of x in [0, 1], clamped away from 0 and 1 by eps (Deformable DETR)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class FeedForward(nn.Module):
    """Position-wise FFN with residual and post-norm: norm(x + Linear(ReLU(Linear(x))))."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) -> (..., d)."""
        # in place: the (..., dim_feedforward) activation is the layer's largest tensor
        y = self.linear2(self.dropout1(torch.relu_(self.linear1(x))))
        return self.norm(x + self.dropout2(y))


class DeformableEncoderLayer(nn.Module):
    """B crops, S tokens of all L levels, d width. MSDA self-attention + FFN."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """src, pos: (B, S, d); reference_points: (B, S, L, 2) in [0, 1]; spatial_shapes (L, 2)
        (H_l, W_l); level_start_index (L,). Returns (B, S, d)."""
        src2 = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, None)
        src = self.norm(src + self.dropout(src2))
        return self.ffn(src)


class DeformableDecoderLayer(nn.Module):
    """B crops, K queries, S memory tokens, d width. Query self-attention, MSDA
    cross-attention into the memory, FFN."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        """tgt, query_pos: (B, K, d); reference_points: (B, K, L, 2) in [0, 1]; memory: (B, S, d).
        Returns (B, K, d)."""
        q = k = tgt + query_pos
        tgt2 = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index, None)
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        return self.ffn(tgt)


class DeformableTransformerEncoder(nn.Module):
    """B crops, S tokens, L levels, d width. A stack of :class:`DeformableEncoderLayer`."""

    def __init__(self, layers: Sequence[DeformableEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def reference_points(spatial_shapes: Sequence[Tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
        """Returns (B, S, L, 2): for each token, its pixel centre normalised to [0, 1] by the
        valid part of its level, then mapped to every level's valid part (Deformable DETR's
        ``get_reference_points``). valid_ratios: (B, L, 2) as (x, y)."""
        per_level = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=valid_ratios.device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=valid_ratios.device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            per_level.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(per_level, 1)[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
    ) -> torch.Tensor:
        """src, pos: (B, S, d); spatial_shapes (L, 2); level_start_index (L,); valid_ratios
        (B, L, 2). Returns the memory (B, S, d)."""
        reference_points = self.reference_points(spatial_shapes.tolist(), valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index)
        return src


class DeformableTransformerDecoder(nn.Module):
    """B crops, K queries, S memory tokens, L levels, d width, n decoder layers. A stack of
    :class:`DeformableDecoderLayer` returning every layer's output."""

    def __init__(self, layers: Sequence[DeformableDecoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
        refine: Optional[RefineFn] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """tgt, query_pos: (B, K, d) query content and position; reference_points: (B, K, 2)
        initial (x, y) in [0, 1] of the crop; memory: (B, S, d) encoder output. refine: iterative
        refinement (``with_box_refine``): after layer i < n-1 the reference points become
        ``refine(i, output_i, reference_i)``, detached. Returns the hidden states (n, B, K, d) of
        every layer and the reference points (n, B, K, 2) each layer attended around."""
        output = tgt
        hidden: List[torch.Tensor] = []
        references: List[torch.Tensor] = []
        for lid, layer in enumerate(self.layers):
            level_points = reference_points[:, :, None] * valid_ratios[:, None]
            output = layer(output, query_pos, level_points, memory, spatial_shapes, level_start_index)
            hidden.append(output)
            references.append(reference_points)
            if refine is not None and lid < len(self.layers) - 1:
                with autocast_off(output):
                    reference_points = refine(lid, at_least_float32(output), reference_points).detach()
        return torch.stack(hidden), torch.stack(references)


class DeformableTransformer(nn.Module):
    """B crops, K queries, L levels, d width, n decoder layers. Flattens L feature maps with
    sine position + level embeddings, encodes them, and decodes K learned queries."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.encoder = DeformableTransformerEncoder(
            [
                DeformableEncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points)
                for _ in range(num_encoder_layers)
            ]
        )
        self.decoder = DeformableTransformerDecoder(
            [
                DeformableDecoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead, dec_n_points)
                for _ in range(num_decoder_layers)
            ]
        )
        self.position_embedding = PositionEmbeddingSine(d_model // 2)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's initialisation: Xavier for every matrix except MSDeformAttn's,
        which keeps its own (zero offsets around a fixed grid, uniform attention)."""
        msda = {id(p) for m in self.modules() if isinstance(m, MSDeformAttn) for p in m.parameters()}
        for p in self.parameters():
            if p.dim() > 1 and id(p) not in msda:
                nn.init.xavier_uniform_(p)
        nn.init.constant_(self.reference_points.bias, 0.0)
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: Sequence[torch.Tensor], query_embed: torch.Tensor, refine: Optional[RefineFn] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """srcs: L maps (B, d, H_l, W_l), finest first; query_embed: (K, 2d), query position then
        content (as Deformable DETR splits it); refine: see :meth:`DeformableTransformerDecoder.forward`.
        Returns the hidden states (n, B, K, d), the reference points (n, B, K, 2), (x, y) in
        [0, 1], and the encoder's output (B, sum_l H_l W_l, d), levels in the order of ``srcs``."""
        batch = srcs[0].shape[0]
        src_flatten, pos_flatten, shapes = [], [], []
        for lvl, src in enumerate(srcs):
            h, w = src.shape[-2:]
            shapes.append((h, w))
            pos = self.position_embedding(h, w, src.device, src.dtype)
            src_flatten.append(src.flatten(2).transpose(1, 2))  # (B, H_l W_l, d)
            pos_flatten.append(pos.flatten(1).transpose(0, 1) + self.level_embed[lvl])  # (H_l W_l, d)
        src_flatten = torch.cat(src_flatten, 1)
        pos_flatten = torch.cat(pos_flatten, 0)[None].expand(batch, -1, -1)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        # Same-size crops: every level is fully valid (see the module docstring).
        valid_ratios = at_least_float32(src_flatten.new_ones(batch, len(srcs), 2))
        memory = self.encoder(src_flatten, pos_flatten, spatial_shapes, level_start_index, valid_ratios)

        query_pos, tgt = torch.split(query_embed, self.d_model, dim=1)
        query_pos = query_pos[None].expand(batch, -1, -1)
        tgt = tgt[None].expand(batch, -1, -1)
        with autocast_off(query_pos):
            reference_points = self.reference_points(query_pos).sigmoid()
        hidden_states, references = self.decoder(
            tgt, query_pos, reference_points, memory, spatial_shapes, level_start_index, valid_ratios, refine
        )
        return hidden_states, references, memory
