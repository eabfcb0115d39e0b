"""The keypoint branches (regression, DePOTR-HM, SimpleBaseline, TransPose-R): their registry,
output types and shapes, parameter counts against the architecture formulas, loss masks,
flip_back, averaging, checkpoint migration and overfitting."""

import dataclasses
from typing import Dict, Tuple

import pytest
import torch

from detectron2.config import CfgNode, get_cfg

from depotr.cli import ConfigError
from depotr.config import add_depotr_config
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, flip_indices, flip_pairs
from depotr.modeling import (
    KEYPOINT_BRANCH_REGISTRY,
    DeformablePoseTransformer,
    DeformableTransformer,
    DePOTRHeatmapBranch,
    HeatmapBranch,
    KeypointBranch,
    MultiLevelProjection,
    RegressionBranch,
    SimpleBaselineBranch,
    TransPoseBranch,
    build_keypoint_branch,
)
from depotr.modeling.heads import (
    BranchOutputs,
    DePOTRDotProductHeatmapHead,
    HeatmapCodec,
    HeatmapOutputs,
    RegressionHead,
    RegressionOutputs,
    RLEOutputs,
    SimpleBaselineHead,
)

COCO_FLIP = flip_indices(COCO_PERSON_KEYPOINT_NAMES, flip_pairs())
# "heatmap_dot_product": DePOTR-HM with HEATMAP.DECODER "dot_product".
HEADS = ["regression", "heatmap", "heatmap_dot_product", "simple_baseline", "transpose"]


# Regression-branch variants: name -> MODEL.DEPOTR keys.
REGRESSION_VARIANTS = {
    "regression": [],
    "regression_iter_refine": ["MODEL.DEPOTR.ITER_REFINE", True],
    "regression_aux": ["MODEL.DEPOTR.AUX_LOSS", True],
    "regression_rle": ["MODEL.DEPOTR.REGRESSION.LOSS", "rle", "MODEL.DEPOTR.AUX_LOSS", True],
}


def default_cfg() -> CfgNode:
    cfg = get_cfg()
    add_depotr_config(cfg)
    return cfg


def small_cfg(head: str = "regression", crop_size: Tuple[int, int] = (256, 192)) -> CfgNode:
    """R18 with BatchNorm, one encoder / decoder layer of width 64: fast on a CPU."""
    cfg = default_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    model = cfg.MODEL.DEPOTR
    model.HEAD = "heatmap" if head == "heatmap_dot_product" else head
    model.HEATMAP.DECODER = "dot_product" if head == "heatmap_dot_product" else "deconv"
    model.HIDDEN_DIM = 64
    model.NHEADS = 4
    model.ENC_LAYERS = 1
    model.DEC_LAYERS = 1
    model.DIM_FEEDFORWARD = 128
    model.DROPOUT = 0.0
    model.SIMPLE_BASELINE.DECONV_CHANNELS = 32
    model.TRANSPOSE.HIDDEN_DIM = 64
    model.TRANSPOSE.ENC_LAYERS = 1
    model.TRANSPOSE.DIM_FEEDFORWARD = 128
    cfg.INPUT.CROP_SIZE = crop_size
    return cfg


def variant_cfg(name: str, crop_size: Tuple[int, int], dec_layers: int = 2) -> CfgNode:
    """small_cfg of a head ("heatmap", ...) or of a regression variant (REGRESSION_VARIANTS)."""
    cfg = small_cfg("regression" if name in REGRESSION_VARIANTS else name, crop_size)
    cfg.merge_from_list(REGRESSION_VARIANTS.get(name, []))
    cfg.MODEL.DEPOTR.DEC_LAYERS = dec_layers
    return cfg


def shapes(outputs: BranchOutputs) -> Dict[str, Tuple[int, ...]]:
    """Field name -> shape of the outputs' tensors (fields that are None left out)."""
    return {name: tuple(value.shape) for name, value in _fields(outputs).items()}


# ---------------------------------------------------------------------------------------------
# The registry


@pytest.mark.parametrize(
    "head, branch_class",
    [
        ("regression", RegressionBranch),
        ("heatmap", DePOTRHeatmapBranch),
        ("simple_baseline", SimpleBaselineBranch),
        ("transpose", TransPoseBranch),
    ],
)
def test_registry_builds_each_head_from_its_config_name(head, branch_class):
    assert KEYPOINT_BRANCH_REGISTRY.get(head) is branch_class
    branch = build_keypoint_branch(small_cfg(head))
    assert type(branch) is branch_class and isinstance(branch, KeypointBranch)
    assert sorted(name for name, _ in KEYPOINT_BRANCH_REGISTRY) == [
        "heatmap",
        "regression",
        "simple_baseline",
        "transpose",
    ]


def test_unknown_head_raises_naming_the_registered_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown MODEL.DEPOTR.HEAD 'pose_resnet'; expected one of the registered "
        r"\['heatmap', 'regression', 'simple_baseline', 'transpose'\]",
    ):
        build_keypoint_branch(small_cfg("pose_resnet"))


@pytest.mark.parametrize("head", ["heatmap", "simple_baseline"])
def test_heatmap_checkpoint_of_version_1_loads_its_backbone_weights_into_body(head):
    """Version 1 named the heatmap network's features module "backbone"; it is "body" now."""
    cfg = small_cfg(head, (128, 96))
    torch.manual_seed(0)
    state = build_keypoint_branch(cfg).state_dict()
    assert state._metadata[""]["version"] == 2
    old = type(state)((key.replace("body.", "backbone.", 1), value) for key, value in state.items())
    old._metadata = {**state._metadata, "": {**state._metadata[""], "version": 1}}
    assert sum(key.startswith("backbone.") for key in old) == sum(key.startswith("body.") for key in state) > 0
    torch.manual_seed(1)
    branch = build_keypoint_branch(cfg)
    assert not all(torch.equal(value, state[key]) for key, value in branch.state_dict().items())
    branch.load_state_dict(old)  # strict: every key found
    for key, value in branch.state_dict().items():
        assert torch.equal(value, state[key]), key
    # Version 2 is not renamed: a "backbone." key is unexpected.
    new = type(state)(state)
    new._metadata = state._metadata
    new["backbone.extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "backbone\.extra"'):
        branch.load_state_dict(new)


def test_the_generic_heatmap_branch_is_not_built_from_a_config():
    with pytest.raises(NotImplementedError, match="HeatmapBranch has no network"):
        HeatmapBranch(small_cfg("heatmap"))


@pytest.mark.parametrize("head, pixel_features", [("heatmap", []), ("heatmap_dot_product", ["res2"])])
def test_depotr_hm_body_passes_on_the_maps_its_head_reads(head, pixel_features):
    branch = build_keypoint_branch(small_cfg(head, (64, 48)))
    assert branch.body.pixel_features == pixel_features == list(type(branch.head).pixel_features)
    features = branch.body(torch.zeros(1, 3, 64, 48))
    assert ("res2" in features) == bool(pixel_features)


# ---------------------------------------------------------------------------------------------
# Output shapes


@pytest.mark.parametrize("batch", [2, 0], ids=["B2", "B0"])
@pytest.mark.parametrize(
    "crop_size, heatmap_size", [((256, 192), (64, 48)), ((384, 288), (96, 72))], ids=["256x192", "384x288"]
)
@pytest.mark.parametrize("head", HEADS)
def test_output_shapes(head, crop_size, heatmap_size, batch):
    torch.manual_seed(0)
    branch = build_keypoint_branch(small_cfg(head, crop_size)).eval()
    assert branch.crop_size == crop_size
    with torch.no_grad():
        outputs = branch(torch.randn(batch, 3, *crop_size))
    if head == "regression":
        assert type(outputs) is RegressionOutputs
        assert shapes(outputs) == {
            "coords": (batch, 17, 2),
            "confidence": (batch, 17),
        }
        assert ((outputs.coords >= 0) & (outputs.coords <= 1)).all()
    else:
        assert type(outputs) is HeatmapOutputs
        assert shapes(outputs) == {"heatmaps": (batch, 17, *heatmap_size)}
    assert branch.decode(outputs).shape == (batch, 17, 3)


@pytest.mark.parametrize("batch", [2, 0], ids=["B2", "B0"])
def test_rle_output_shapes_with_aux_outputs(batch):
    torch.manual_seed(0)
    branch = build_keypoint_branch(variant_cfg("regression_rle", (64, 48), dec_layers=3)).eval()
    with torch.no_grad():
        outputs = branch(torch.randn(batch, 3, 64, 48))
    assert type(outputs) is RLEOutputs
    assert shapes(outputs) == {
        "coords": (batch, 17, 2),
        "confidence": (batch, 17, 2),
        "aux_coords": (2, batch, 17, 2),
        "aux_confidence": (2, batch, 17, 2),
    }
    assert ((outputs.confidence > 0) & (outputs.confidence < 1)).all()
    scores = branch.decode(outputs)[..., 2]
    assert scores.shape == (batch, 17) and ((scores > 0) & (scores < 1)).all()
    assert len(branch.head.coord_mlps) == 1  # without ITER_REFINE the layers share the MLP


def test_aux_outputs_apply_the_shared_mlp_to_every_layer():
    torch.manual_seed(0)
    head = RegressionHead(8, 2, 3, iter_refine=False, all_layers=True)
    torch.nn.init.normal_(head.coord_mlps[0].layers[-1].weight)
    features = {"hidden_states": torch.randn(3, 2, 5, 8), "references": torch.rand(3, 2, 5, 2)}
    outputs = head(features)
    expected = [head.predict_coords(0, h, r) for h, r in zip(features["hidden_states"], features["references"])]
    torch.testing.assert_close(outputs.aux_coords, torch.stack(expected[:2]))
    torch.testing.assert_close(outputs.coords, expected[2])
    assert not torch.allclose(expected[0], expected[2])
    logits = head.score(features["hidden_states"]).squeeze(-1)
    torch.testing.assert_close(outputs.aux_confidence, logits[:2])
    assert set(shapes(RegressionHead(8, 2, 3, iter_refine=False)(features))) == {"coords", "confidence"}


def test_heatmap_sigma_scales_with_heatmap_height():
    codec = build_keypoint_branch(small_cfg("simple_baseline", (384, 288))).codec
    assert (codec.stride, codec.heatmap_size, codec.sigma) == (4, (96, 72), 3.0)


def test_wrong_crop_size_raises():
    branch = build_keypoint_branch(small_cfg("regression", (64, 48)))
    with pytest.raises(ValueError, match="crops of shape"):
        branch(torch.zeros(1, 3, 48, 64))


def test_invalid_configs_raise():
    cfg = small_cfg("heatmap")
    cfg.MODEL.DEPOTR.ITER_REFINE = True
    with pytest.raises(ValueError, match="ITER_REFINE"):
        build_keypoint_branch(cfg)
    cfg = small_cfg("pose_resnet")
    with pytest.raises(ValueError, match="unknown MODEL.DEPOTR.HEAD"):
        build_keypoint_branch(cfg)
    cfg = small_cfg("regression")
    cfg.MODEL.DEPOTR.REGRESSION.LOSS = "l2"
    with pytest.raises(ValueError, match="REGRESSION.LOSS must be one of"):
        build_keypoint_branch(cfg)
    body = build_keypoint_branch(small_cfg("regression")).body
    with pytest.raises(ValueError, match="predict_sigma=True"):
        RegressionBranch(body=body, head=RegressionHead(64, 2, 1, False), crop_size=(256, 192), loss="rle")


@pytest.mark.parametrize(
    "head,crop_size,stride,feature",
    [("simple_baseline", (64, 48), 32, "res5"), ("transpose", (68, 52), 8, "res3"), ("transpose", (64, 44), 8, "res3")],
)
def test_resnet_heatmap_heads_need_crop_sides_that_are_multiples_of_their_map_stride(head, crop_size, stride, feature):
    """Else their heatmaps are not crop size / stride: named when the branch is built, not at the
    first training step (which said only that the heatmap sizes differ)."""
    with pytest.raises(
        ValueError,
        match=rf"INPUT.CROP_SIZE \({crop_size[0]}, {crop_size[1]}\): MODEL.DEPOTR.HEAD '{head}' reads the "
        rf"stride-{stride} map '{feature}', so both crop sides must be multiples of {stride}",
    ):
        build_keypoint_branch(small_cfg(head, crop_size))
    ok = tuple(side // stride * stride for side in crop_size)
    branch = build_keypoint_branch(small_cfg(head, ok)).eval()
    with torch.no_grad():
        assert branch(torch.zeros(1, 3, *ok)).heatmaps.shape[-2:] == branch.codec.heatmap_size


@pytest.mark.parametrize(
    "decoder,crop_size,stride,reader",
    [
        ("deconv", (72, 48), 16, "HEATMAP.DECODER 'deconv' starts from a stride-16 map"),
        ("dot_product", (66, 48), 4, "MODEL.DEPOTR.HEAD 'heatmap' gives stride-4 heatmaps"),
    ],
)
def test_depotr_hm_names_the_crop_size_key_when_its_sides_do_not_fit_the_stride(decoder, crop_size, stride, reader):
    """A user's INPUT.CROP_SIZE of the wrong multiple is named as the key, with the stride needed
    and why (before: "crop size (...) is not divisible by the heatmap stride 4", no key)."""
    cfg = small_cfg("heatmap_dot_product" if decoder == "dot_product" else "heatmap", crop_size)
    with pytest.raises(
        ConfigError,
        match=rf"INPUT.CROP_SIZE \({crop_size[0]}, {crop_size[1]}\): {reader}, so both crop sides must be "
        rf"multiples of {stride}",
    ):
        build_keypoint_branch(cfg)


class _ToyBackbone(torch.nn.Module):
    """Two stride-2 convs: {"c1": stride 2, "c2": stride 4} with 8 channels."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        c1 = self.c1(x)
        return {"c1": c1, "c2": self.c2(c1)}


def test_branches_are_constructible_without_cfg():
    torch.manual_seed(0)
    body = DeformablePoseTransformer(
        backbone=_ToyBackbone(),
        in_features=["c1", "c2"],
        input_proj=MultiLevelProjection([8, 8], 32, 3),
        transformer=DeformableTransformer(
            d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64, num_feature_levels=3
        ),
        num_keypoints=3,
    )
    regression = RegressionBranch(body=body, head=RegressionHead(32, 2, 1, False), crop_size=(16, 12))
    assert regression(torch.randn(2, 3, 16, 12)).coords.shape == (2, 3, 2)
    heatmap = HeatmapBranch(
        body=_ToyBackbone(),
        head=SimpleBaselineHead("c2", 8, 4, 3, num_deconv_layers=1, deconv_channels=8),
        codec=HeatmapCodec((16, 12), stride=2, sigma=1.0),
    )
    assert heatmap(torch.randn(2, 3, 16, 12)).heatmaps.shape == (2, 3, 8, 6)


# ---------------------------------------------------------------------------------------------
# Parameter counts, from the architecture formulas


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def resnet_bottleneck(blocks_per_stage) -> int:
    """Detectron2 ResNet with FrozenBN: bias-free convs only (FrozenBN holds buffers)."""
    total = conv(3, 64, 7, False)  # stem
    c_in = 64
    for stage, blocks in enumerate(blocks_per_stage):
        width = 64 * 2**stage
        c_out = 4 * width
        for block in range(blocks):
            total += conv(c_in, width, 1, False) + conv(width, width, 3, False) + conv(width, c_out, 1, False)
            if block == 0:
                total += conv(c_in, c_out, 1, False)  # projection shortcut
            c_in = c_out
    return total


def msda(d: int, heads: int, levels: int, points: int) -> int:
    """sampling_offsets, attention_weights, value_proj, output_proj."""
    mlp = heads * levels * points
    return linear(d, 2 * mlp) + linear(d, mlp) + 2 * linear(d, d)


def ffn(d: int, dim_feedforward: int) -> int:
    return linear(d, dim_feedforward) + linear(dim_feedforward, d)


def layer_norm(d: int) -> int:
    return 2 * d


def multihead_attention(d: int) -> int:
    return 3 * d * d + 3 * d + linear(d, d)  # in_proj (q, k, v) + out_proj


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_depotr_r50():
    """Thesis architecture: R50, 3 + 1 levels, d 256, 8 heads, 4 points, FFN 1024, 6 + 6 layers,
    Embedding(17, 512); our head: 3-layer MLP + Linear(d, 1) confidence."""
    branch = build_keypoint_branch(default_cfg())
    d, heads, levels, points, ff, layers, k = 256, 8, 4, 4, 1024, 6, 17
    encoder_layer = msda(d, heads, levels, points) + layer_norm(d) + ffn(d, ff) + layer_norm(d)
    decoder_layer = (
        multihead_attention(d)
        + layer_norm(d)
        + msda(d, heads, levels, points)
        + layer_norm(d)
        + ffn(d, ff)
        + layer_norm(d)
    )
    group_norm = 2 * d
    expected = {
        "backbone": resnet_bottleneck([3, 4, 6, 3]),
        "input_proj": sum(conv(c, d, 1, True) + group_norm for c in (512, 1024, 2048))
        + conv(2048, d, 3, True)
        + group_norm,
        "encoder": layers * encoder_layer,
        "decoder": layers * decoder_layer,
        "level_embed + reference_points": levels * d + linear(d, 2),
        "query_embed": k * 2 * d,
        "head": 2 * linear(d, d) + linear(d, 2) + linear(d, 1),
    }
    body, transformer = branch.body, branch.body.transformer
    actual = {
        "backbone": count(body.backbone),
        "input_proj": count(body.input_proj),
        "encoder": count(transformer.encoder),
        "decoder": count(transformer.decoder),
        "level_embed + reference_points": transformer.level_embed.numel() + count(transformer.reference_points),
        "query_embed": count(body.query_embed),
        "head": count(branch.head),
    }
    assert actual == expected
    assert count(branch) == sum(expected.values())
    # Deformable DETR's DeformableTransformer (two_stage=False) at the thesis' sizes: 10,665,986.
    assert count(transformer) == expected["encoder"] + expected["decoder"] + expected["level_embed + reference_points"]
    # Cross-checks of the formulas against published numbers: torchvision's ResNet-50 has
    # 25,557,032 parameters, of which 2,049,000 are the classifier and 53,120 BatchNorm affine.
    assert expected["backbone"] == 25_557_032 - 2_049_000 - 53_120
    # One MSDeformAttn of Deformable DETR (d 256, 8 heads, 4 levels, 4 points).
    assert msda(256, 8, 4, 4) == 230_272


def test_parameter_counts_rle():
    """RLE head: the coordinate MLP + Linear(d, 2) scales; its flow: 6 couplings, each an MLP
    1 -> 64 -> 64 -> 2 (the RLE paper's size)."""
    cfg = default_cfg()
    cfg.MODEL.DEPOTR.REGRESSION.LOSS = "rle"
    branch = build_keypoint_branch(cfg)
    d = 256
    assert count(branch.head) == 2 * linear(d, d) + linear(d, 2) + linear(d, 2)
    assert count(branch.rle_loss) == 6 * (linear(1, 64) + linear(64, 64) + linear(64, 2))


def test_parameter_counts_depotr_hm_head():
    """The thesis' heatmap head: Linear(256, 16 x 12) -> 2 x [ConvTranspose2d(17, 17, 3) + BN]
    -> Conv2d(17, 17, 3). Our deconvolutions have no bias (BatchNorm follows)."""
    cfg = small_cfg("heatmap")
    cfg.MODEL.DEPOTR.HIDDEN_DIM = 256
    head = build_keypoint_branch(cfg).head
    k = 17
    assert count(head.mlp) == linear(256, 16 * 12)
    assert count(head.deconv) == 2 * (conv(k, k, 3, False) + 2 * k)
    assert count(head.predictor) == conv(k, k, 3, True)


# ---------------------------------------------------------------------------------------------
# Losses


def _masked_keypoints(batch: int, crop_size: Tuple[int, int]) -> torch.Tensor:
    """(B, 17, 3) labelled keypoints inside the crop except keypoint 0 (v = 0), keypoint 1 (left
    of the crop) and keypoint 2 (x = W: outside, the crop is [0, W))."""
    height, width = crop_size
    torch.manual_seed(1)
    keypoints = torch.rand(batch, 17, 3) * torch.tensor([width - 1.0, height - 1.0, 0.0])
    keypoints[..., 2] = 2
    keypoints[:, 0, 2] = 0
    keypoints[:, 1, 0] = -3.0
    keypoints[:, 2, 0] = width
    return keypoints


def _confidences(branch: RegressionBranch, *shape: int) -> torch.Tensor:
    """Random sigmas (..., K, 2) in [0.05, 0.35] or score logits (..., K) for the branch's head."""
    if branch.head.predict_sigma:
        return torch.rand(*shape, 17, 2) * 0.3 + 0.05
    return torch.randn(*shape, 17)


def _leaf_outputs(branch: torch.nn.Module, batch: int) -> BranchOutputs:
    """Random outputs of the branch's type whose tensors are leaves that require grad."""
    if isinstance(branch, RegressionBranch):
        n = len(branch.body.transformer.decoder.layers)
        outputs_type = RLEOutputs if branch.head.predict_sigma else RegressionOutputs
        outputs = outputs_type(torch.rand(batch, 17, 2), _confidences(branch, batch))
        if branch.head.all_layers:
            outputs.aux_coords = torch.rand(n - 1, batch, 17, 2)
            outputs.aux_confidence = _confidences(branch, n - 1, batch)
    else:
        outputs = HeatmapOutputs(torch.rand(batch, 17, *branch.codec.heatmap_size))
    for value in _fields(outputs).values():
        value.requires_grad_()
    return outputs


def _fields(outputs: BranchOutputs) -> Dict[str, torch.Tensor]:
    """Field name -> tensor of the outputs (fields that are None left out)."""
    values = {f.name: getattr(outputs, f.name) for f in dataclasses.fields(outputs)}
    return {name: value for name, value in values.items() if value is not None}


@pytest.mark.parametrize("loss", ["smooth_l1", "l1", "rle"])
@pytest.mark.parametrize("variant", ["regression", "regression_iter_refine", "regression_aux"])
def test_regression_losses_hand_computed(variant, loss):
    cfg = variant_cfg(variant, (20, 10))
    cfg.MODEL.DEPOTR.REGRESSION.LOSS = loss
    branch = build_keypoint_branch(cfg)
    gt = torch.zeros(1, 17, 3)
    gt[0, 0] = torch.tensor([5.5, 10.0, 2.0])  # normalised (0.55, 0.5)
    coords = torch.full((1, 17, 2), 0.5)
    confidence = torch.full((1, 17, 2), 0.1) if loss == "rle" else torch.zeros(1, 17)
    outputs_type = RLEOutputs if loss == "rle" else RegressionOutputs
    outputs = outputs_type(coords, confidence)
    if variant != "regression":
        outputs = outputs_type(coords, confidence, coords[None], confidence[None])
    losses = branch.losses(outputs, gt)
    # One supervised keypoint, error (0.05, 0). smooth-L1(0.05, beta 0.01) = 0.05 - 0.005; L1 0.05;
    # BCE(0, t) = log 2, x 0.1. RLE at the start (identity flow), sigma 0.1: 2 log 0.1 + 0.05 / 0.1 + 2 log 2.
    expected = {
        "smooth_l1": {"loss_keypoint_coords": torch.tensor(0.045), "loss_keypoint_score": torch.tensor(0.0693147)},
        "l1": {"loss_keypoint_coords": torch.tensor(0.05), "loss_keypoint_score": torch.tensor(0.0693147)},
        "rle": {"loss_keypoint_rle": torch.tensor(2 * -2.3025851 + 0.5 + 2 * 0.6931472)},
    }[loss]
    if variant != "regression":
        expected.update({k + "_0": v for k, v in expected.items()})
    assert losses.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value)


@pytest.mark.parametrize("head", [*REGRESSION_VARIANTS, "heatmap"])
def test_unsupervised_keypoints_get_zero_loss_and_gradient(head):
    branch = build_keypoint_branch(variant_cfg(head, (64, 48)))
    outputs = _leaf_outputs(branch, batch=2)
    gt = _masked_keypoints(2, branch.crop_size)
    losses = branch.losses(outputs, gt)
    assert all(key.startswith("loss_") for key in losses)
    sum(losses.values()).backward()
    key = "heatmaps" if head == "heatmap" else "coords"
    aux_coords = getattr(outputs, "aux_coords", None)
    grads = [getattr(outputs, key).grad] + ([aux_coords.grad[0]] if aux_coords is not None else [])
    if isinstance(outputs, RLEOutputs):
        grads += [outputs.confidence.grad, outputs.aux_confidence.grad[0]]
    for grad in grads:
        assert grad[:, :3].abs().sum() == 0
        assert (grad[:, 3:].flatten(2).abs().sum(-1) > 0).all()
    # Moving an unsupervised keypoint's prediction anywhere leaves the losses unchanged.
    with torch.no_grad():
        moved = dataclasses.replace(outputs, **{name: value.clone() for name, value in _fields(outputs).items()})
        getattr(moved, key)[:, :3] = 0.123
        for name, value in branch.losses(moved, gt).items():
            if "score" not in name:
                torch.testing.assert_close(value, losses[name])


@pytest.mark.parametrize("batch", [0, 2], ids=["empty_batch", "all_unlabelled"])
@pytest.mark.parametrize("head", ["regression", "regression_rle", "heatmap"])
def test_no_supervision_gives_zero_loss_that_backpropagates(head, batch):
    torch.manual_seed(0)
    branch = build_keypoint_branch(variant_cfg(head, (64, 48), dec_layers=1))
    outputs = branch(torch.randn(batch, 3, 64, 48))
    losses = branch.losses(outputs, torch.zeros(batch, 17, 3))
    coordinate_losses = {k: v for k, v in losses.items() if "score" not in k}
    assert all(v.item() == 0 for v in coordinate_losses.values())
    sum(losses.values()).backward()
    assert any(p.grad is not None for p in branch.parameters())


# ---------------------------------------------------------------------------------------------
# Flip back, decode, averaging


@pytest.mark.parametrize("head", [*REGRESSION_VARIANTS, "heatmap"])
def test_flip_back_is_an_involution(head):
    branch = build_keypoint_branch(variant_cfg(head, (64, 48), dec_layers=3))
    torch.manual_seed(0)
    outputs = _detached(_leaf_outputs(branch, batch=2))
    twice = branch.flip_back(branch.flip_back(outputs, COCO_FLIP), COCO_FLIP)
    assert type(twice) is type(outputs) and _fields(twice).keys() == _fields(outputs).keys()
    for key, value in _fields(outputs).items():
        torch.testing.assert_close(getattr(twice, key), value)


def _detached(outputs: BranchOutputs) -> BranchOutputs:
    return dataclasses.replace(outputs, **{name: value.detach() for name, value in _fields(outputs).items()})


def test_regression_flip_back_mirrors_and_swaps():
    branch = build_keypoint_branch(small_cfg("regression", (64, 48)))
    torch.manual_seed(0)
    outputs = RegressionOutputs(torch.rand(2, 17, 2), torch.randn(2, 17))
    decoded = branch.decode(outputs)
    back = branch.decode(branch.flip_back(outputs, COCO_FLIP))
    # Keypoint k of the original crop is keypoint flip[k] of the mirrored one, at u -> W - u.
    torch.testing.assert_close(back[..., 0], 48 - decoded[:, COCO_FLIP, 0])
    torch.testing.assert_close(back[..., 1:], decoded[:, COCO_FLIP, 1:])


def test_rle_flip_back_swaps_sigmas_without_mirroring_them():
    branch = build_keypoint_branch(variant_cfg("regression_rle", (64, 48)))
    torch.manual_seed(0)
    outputs = _detached(_leaf_outputs(branch, batch=2))
    back = branch.flip_back(outputs, COCO_FLIP)
    # A mirror keeps the size of x and y errors: keypoint k takes its partner's (sigma_x, sigma_y).
    torch.testing.assert_close(back.confidence, outputs.confidence[:, COCO_FLIP])
    torch.testing.assert_close(back.aux_confidence, outputs.aux_confidence[:, :, COCO_FLIP])
    torch.testing.assert_close(back.coords[..., 0], 1 - outputs.coords[:, COCO_FLIP, 0])
    decoded, decoded_back = branch.decode(outputs), branch.decode(back)
    torch.testing.assert_close(decoded_back[..., 2], decoded[:, COCO_FLIP, 2])


def test_regression_decode():
    branch = build_keypoint_branch(small_cfg("regression", (64, 48)))
    outputs = RegressionOutputs(torch.tensor([[[0.5, 0.25]]]), torch.tensor([[0.0]]))
    torch.testing.assert_close(branch.decode(outputs), torch.tensor([[[24.0, 16.0, 0.5]]]))
    rle = build_keypoint_branch(variant_cfg("regression_rle", (64, 48)))
    outputs = RLEOutputs(torch.tensor([[[0.5, 0.25]]]), torch.tensor([[[0.1, 0.3]]]))
    # confidence = 1 - (sigma_x + sigma_y) / 2
    torch.testing.assert_close(rle.decode(outputs), torch.tensor([[[24.0, 16.0, 0.8]]]))


def test_average_outputs():
    a = RegressionOutputs(torch.zeros(1, 2, 2), torch.ones(1, 2))
    b = RegressionOutputs(torch.ones(1, 2, 2), torch.full((1, 2), 3.0))
    averaged = a.average(b)
    assert type(averaged) is RegressionOutputs and averaged.aux_coords is None
    torch.testing.assert_close(averaged.coords, torch.full((1, 2, 2), 0.5))
    # Logits are averaged as logits: the score is sigmoid(2), not the mean of sigmoid(1), sigmoid(3).
    torch.testing.assert_close(averaged.confidence, torch.full((1, 2), 2.0))
    torch.testing.assert_close(averaged.scores(), torch.full((1, 2), 2.0).sigmoid())


def test_average_rle_outputs_averages_scales_so_scores_average_too():
    a = RLEOutputs(torch.zeros(1, 1, 2), torch.tensor([[[0.1, 0.3]]]), torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2))
    b = RLEOutputs(torch.ones(1, 1, 2), torch.tensor([[[0.5, 0.1]]]), torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    averaged = a.average(b)
    assert type(averaged) is RLEOutputs
    torch.testing.assert_close(averaged.confidence, torch.tensor([[[0.3, 0.2]]]))
    torch.testing.assert_close(averaged.scores(), (a.scores() + b.scores()) / 2)  # 0.75 = (0.8 + 0.7) / 2
    torch.testing.assert_close(averaged.aux_confidence, torch.full((1, 1, 1, 2), 0.5))


def test_average_of_different_output_types_raises():
    regression = RegressionOutputs(torch.zeros(1, 1, 2), torch.zeros(1, 1))
    with pytest.raises(TypeError, match="cannot average RegressionOutputs with RLEOutputs"):
        regression.average(RLEOutputs(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2)))
    with pytest.raises(ValueError, match="only one has an auxiliary output"):
        regression.average(
            RegressionOutputs(torch.zeros(1, 1, 2), torch.zeros(1, 1), torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1))
        )


# ---------------------------------------------------------------------------------------------
# Overfitting synthetic crops


def _blob_crops(num_keypoints: int, crop_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """4 crops with a Gaussian blob (sigma 1.5 px) of a keypoint-specific colour at each of
    ``num_keypoints`` random keypoints. Returns crops (4, 3, H, W) and keypoints (4, K, 3)."""
    height, width = crop_size
    generator = torch.Generator().manual_seed(0)
    xy = 4 + torch.rand(4, num_keypoints, 2, generator=generator) * torch.tensor([width - 8.0, height - 8.0])
    colours = torch.randn(num_keypoints, 3, generator=generator).sign()
    xs = torch.arange(width) + 0.5
    ys = torch.arange(height) + 0.5
    blobs = torch.exp(
        -((xs - xy[..., 0, None]) ** 2)[..., None, :] / (2 * 1.5**2)
        - ((ys - xy[..., 1, None]) ** 2)[..., :, None] / (2 * 1.5**2)
    )  # (4, K, H, W)
    crops = 2 * torch.einsum("bkhw,kc->bchw", blobs, colours)
    crops = crops + 0.1 * torch.randn(4, 3, height, width, generator=generator)
    return crops, torch.cat((xy, torch.full((4, num_keypoints, 1), 2.0)), dim=-1)


@pytest.fixture
def one_thread():
    """Small ops in a loop: with one thread they do not stall on OpenMP barriers when other
    processes share the cores (measured: 0.3 s per step, against up to 4 s with two threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("head", ["regression", "heatmap", "heatmap_dot_product"])
def test_overfits_four_crops(head, one_thread):
    """Fits 4 fixed 64x48 crops to a mean error < 2 px within 300 AdamW steps (about 75 steps
    for the regression branch, 20 for the heatmap branch)."""
    torch.manual_seed(0)
    crop_size, num_keypoints = (64, 48), 5
    cfg = small_cfg(head, crop_size)
    cfg.MODEL.DEPOTR.NUM_KEYPOINTS = num_keypoints
    branch = build_keypoint_branch(cfg)
    crops, gt = _blob_crops(num_keypoints, crop_size)
    optimizer = torch.optim.AdamW(branch.parameters(), lr=1e-3, weight_decay=0.0)
    errors = []
    for _ in range(300):
        outputs = branch(crops)
        errors.append((branch.decode(outputs)[..., :2] - gt[..., :2]).norm(dim=-1).mean().item())
        if errors[-1] < 2.0:
            break
        optimizer.zero_grad()
        sum(branch.losses(outputs, gt).values()).backward()
        optimizer.step()
    assert errors[-1] < 2.0, f"mean error {errors[-1]:.2f} px after {len(errors)} steps (start {errors[0]:.1f})"
    # Eval mode too, once BatchNorm's running statistics are those of the 4 crops (after a few
    # steps they still lag behind, by far for SimpleBaseline's 0.001-std deconvolutions).
    for module in branch.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch gives its statistics
    with torch.no_grad():
        branch(crops)
        branch.eval()
        error = (branch.decode(branch(crops))[..., :2] - gt[..., :2]).norm(dim=-1).mean().item()
    assert error < 2.0, f"eval-mode mean error {error:.2f} px"


def test_heatmap_deep_supervision_supervises_every_decoder_layer_with_its_own_head():
    cfg = small_cfg("heatmap", (64, 48))
    cfg.MODEL.DEPOTR.DEC_LAYERS = 3
    cfg.MODEL.DEPOTR.AUX_LOSS = True
    torch.manual_seed(0)
    branch = build_keypoint_branch(cfg).train()
    crops = torch.randn(2, 3, 64, 48)
    gt = torch.zeros(2, 17, 3)
    gt[:, :, :2] = torch.rand(2, 17, 2) * torch.tensor([48.0, 64.0])
    gt[:, :, 2] = 2
    outputs = branch(crops)
    assert outputs.aux_heatmaps.shape == (2, 2, 17, 16, 12)
    # The reference: layer i's head applied to layer i's hidden state on its own.
    hidden = branch.body(crops)["hidden_states"]
    heads = list(branch.aux_heads) + [branch.head]
    for i in range(3):
        expected = heads[i]({"hidden_states": hidden[i : i + 1]})
        got = outputs.heatmaps if i == 2 else outputs.aux_heatmaps[i]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    losses = branch.losses(outputs, gt)
    assert sorted(losses) == ["loss_heatmap", "loss_heatmap_0", "loss_heatmap_1"]
    targets, weights = branch.codec.encode(gt)
    for key, heatmaps in (("loss_heatmap_0", outputs.aux_heatmaps[0]), ("loss_heatmap", outputs.heatmaps)):
        reference = 0.5 * (((heatmaps - targets) ** 2).mean((-2, -1)) * weights).mean()
        torch.testing.assert_close(losses[key], reference)
    # At inference only the last layer is computed.
    assert set(shapes(branch.eval()(crops))) == {"heatmaps"}
    cfg.MODEL.DEPOTR.HEAD = "simple_baseline"
    with pytest.raises(ValueError, match="AUX_LOSS"):
        build_keypoint_branch(cfg)


def test_dot_product_heatmaps_equal_the_formula():
    """heatmap k at pixel (i, j) = e_k . P[:, i, j] / sqrt(d) + b_k, written out per pixel."""
    torch.manual_seed(0)
    d, k = 32, 3
    head = DePOTRDotProductHeatmapHead(d, k, fine_channels=8, mlp_layers=2)
    torch.nn.init.normal_(head.bias)
    features = {
        "hidden_states": torch.randn(2, 2, k, d),
        "memory": [torch.randn(2, d, 2, 3)],
        "res2": torch.randn(2, 8, 4, 6),
    }
    heatmaps = head(features)
    assert heatmaps.shape == (2, k, 4, 6)
    coarse = torch.nn.functional.interpolate(features["memory"][0], size=(4, 6), mode="bilinear")
    pixels = head.pixel_proj(torch.relu(head.norm(head.fine_proj(features["res2"]) + coarse)))
    embeddings = head.embed(features["hidden_states"][-1])
    for b in range(2):
        for key in range(k):
            for i in range(4):
                for j in range(6):
                    value = embeddings[b, key] @ pixels[b, :, i, j] / d**0.5 + head.bias[key]
                    torch.testing.assert_close(heatmaps[b, key, i, j], value, rtol=1e-5, atol=1e-6)


def test_dot_product_decoder_needs_res3_first():
    cfg = small_cfg("heatmap_dot_product", (64, 48))
    cfg.MODEL.DEPOTR.IN_FEATURES = ["res4", "res5"]
    with pytest.raises(ValueError, match="IN_FEATURES must start with 'res3'"):
        build_keypoint_branch(cfg)
    cfg.MODEL.DEPOTR.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.DEPOTR.HEATMAP.DECODER = "mlp"
    with pytest.raises(ValueError, match="DECODER must be 'deconv' or 'dot_product'"):
        build_keypoint_branch(cfg)
