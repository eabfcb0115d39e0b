"""The DePOTR body (the seed thesis, on Deformable DETR, Zhu et al. 2021) of the regression
(DePOTR) and heatmap (DePOTR-HM) branches: ResNet -> L projected levels -> deformable transformer
-> one decoder output per keypoint query."""

from typing import Dict, Optional, Sequence

from torch import Tensor, nn

from detectron2.config import CfgNode, configurable

from .backbone import MultiLevelProjection, build_resnet
from .deformable_transformer import DeformableTransformer, RefineFn


class DeformablePoseTransformer(nn.Module):
    """B crops, K keypoints (= queries), n decoder layers, d width."""

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_features: Sequence[str],
        input_proj: MultiLevelProjection,
        transformer: DeformableTransformer,
        num_keypoints: int,
        pixel_features: Sequence[str] = (),
    ):
        """
        Args:
            backbone: (B, 3, H, W) crops -> dict of maps with ``in_features`` and ``pixel_features``.
            in_features: backbone maps fed to ``input_proj`` (-> L maps of width d), finest first.
            transformer: the deformable encoder-decoder of width d.
            num_keypoints: K; one learned query (position + content, 2d values) per keypoint.
            pixel_features: backbone maps passed on to the head as they are (the dot-product
                heatmap head reads "res2").
        """
        super().__init__()
        self.backbone = backbone
        self.in_features = list(in_features)
        self.pixel_features = list(pixel_features)
        self.input_proj = input_proj
        self.transformer = transformer
        self.query_embed = nn.Embedding(num_keypoints, 2 * transformer.d_model)

    @classmethod
    def from_config(cls, cfg: CfgNode, pixel_features: Sequence[str] = ()) -> Dict[str, object]:
        """pixel_features: the head's ``pixel_features``, named by the branch."""
        model = cfg.MODEL.DEPOTR
        pixel_features = list(pixel_features)
        backbone = build_resnet(cfg, sorted(set(model.IN_FEATURES) | set(pixel_features)))
        shapes = backbone.output_shape()
        return {
            "backbone": backbone,
            "in_features": model.IN_FEATURES,
            "pixel_features": pixel_features,
            "input_proj": MultiLevelProjection(
                [shapes[f].channels for f in model.IN_FEATURES], model.HIDDEN_DIM, model.NUM_FEATURE_LEVELS
            ),
            "transformer": DeformableTransformer(
                d_model=model.HIDDEN_DIM,
                nhead=model.NHEADS,
                num_encoder_layers=model.ENC_LAYERS,
                num_decoder_layers=model.DEC_LAYERS,
                dim_feedforward=model.DIM_FEEDFORWARD,
                dropout=model.DROPOUT,
                num_feature_levels=model.NUM_FEATURE_LEVELS,
                enc_n_points=model.ENC_N_POINTS,
                dec_n_points=model.DEC_N_POINTS,
            ),
            "num_keypoints": model.NUM_KEYPOINTS,
        }

    def forward(self, crops: Tensor, refine: Optional[RefineFn] = None) -> Dict[str, Tensor]:
        """
        Args:
            crops: (B, 3, H, W) normalised crops.
            refine: iterative reference refinement, see :meth:`DeformableTransformerDecoder.forward`.
        Returns:
            "hidden_states": (n, B, K, d) decoder output of every layer.
            "references": (n, B, K, 2) the reference point (x, y) each layer attended around,
                normalised to [0, 1] of the crop width / height.
            "memory": L maps (B, d, H_l, W_l), the encoder's output, finest first.
            and each of ``pixel_features``: the backbone map (B, C, H / s, W / s).
        """
        features = self.backbone(crops)
        srcs = self.input_proj([features[f] for f in self.in_features])
        hidden_states, references, memory = self.transformer(srcs, self.query_embed.weight, refine)
        sizes = [src.shape[-2] * src.shape[-1] for src in srcs]
        memory_maps = [level.transpose(1, 2).reshape(src.shape) for level, src in zip(memory.split(sizes, dim=1), srcs)]
        outputs = {"hidden_states": hidden_states, "references": references, "memory": memory_maps}
        outputs.update({name: features[name] for name in self.pixel_features})
        return outputs
