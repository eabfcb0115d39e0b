"""Position embedding, encoder reference points and iterative refinement of the deformable
transformer (Deformable DETR)."""

import math

import torch

from depotr.modeling.deformable_transformer import (
    DeformableTransformer,
    DeformableTransformerEncoder,
    inverse_sigmoid,
)
from depotr.modeling.heads import RegressionHead
from depotr.modeling.position_encoding import PositionEmbeddingSine


def _detr_position_embedding(mask: torch.Tensor, num_pos_feats: int) -> torch.Tensor:
    """DETR's PositionEmbeddingSine(normalize=True) with Deformable DETR's -0.5 offset, from a
    (B, H, W) padding mask, as written in Deformable DETR's ``models/position_encoding.py``."""
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * scale
    x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def test_position_embedding_matches_detr():
    expected = _detr_position_embedding(torch.zeros(1, 5, 3, dtype=torch.bool), 16)[0]
    actual = PositionEmbeddingSine(16)(5, 3, torch.device("cpu"))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_encoder_reference_points_are_normalised_pixel_centres():
    valid_ratios = torch.ones(2, 2, 2)
    refs = DeformableTransformerEncoder.reference_points([(2, 3), (1, 2)], valid_ratios)
    assert refs.shape == (2, 2 * 3 + 1 * 2, 2, 2)
    level0 = [(x / 6, y / 4) for y in (1, 3) for x in (1, 3, 5)]
    level1 = [(1 / 4, 1 / 2), (3 / 4, 1 / 2)]
    expected = torch.tensor(level0 + level1)[None, :, None].expand(2, -1, 2, -1)
    torch.testing.assert_close(refs, expected)


def test_iterative_refinement_moves_and_detaches_reference_points():
    torch.manual_seed(0)
    d, layers = 32, 3
    transformer = DeformableTransformer(
        d_model=d,
        nhead=4,
        num_encoder_layers=1,
        num_decoder_layers=layers,
        dim_feedforward=64,
        dropout=0.0,
        num_feature_levels=2,
        enc_n_points=2,
        dec_n_points=2,
    )
    head = RegressionHead(d, 2, layers, iter_refine=True)
    for mlp in head.coord_mlps:  # non-zero refinement
        torch.nn.init.normal_(mlp.layers[-1].weight, std=0.1)
    srcs = [torch.randn(2, d, 4, 3), torch.randn(2, d, 2, 2)]
    query_embed = torch.randn(5, 2 * d)
    hidden, refs, _ = transformer(srcs, query_embed, refine=head.predict_coords)
    assert hidden.shape == (layers, 2, 5, d) and refs.shape == (layers, 2, 5, 2)
    for i in range(layers - 1):
        torch.testing.assert_close(refs[i + 1], head.predict_coords(i, hidden[i], refs[i]))
    # Later references are detached: no gradient reaches the refinement MLPs through them.
    grads = torch.autograd.grad(refs[1:].sum(), list(head.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    # Without refinement every layer attends around the same initial reference points.
    _, plain_refs, _ = transformer(srcs, query_embed)
    torch.testing.assert_close(plain_refs, plain_refs[:1].expand(layers, -1, -1, -1))


def test_inverse_sigmoid():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    y = inverse_sigmoid(x)
    torch.testing.assert_close(y[1:3].sigmoid(), x[1:3])
    assert torch.isfinite(y).all()
