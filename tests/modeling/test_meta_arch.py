"""TopDownPoseEstimator, its box sources, the flip test and the configs.

Most tests use ``BranchDouble``, a TEST DOUBLE of the keypoint-branch contract (not a real
head), so that the meta-architecture's own logic (boxes, crops, coordinate transforms,
rescoring, flip test) is checked against known answers.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances, Keypoints

from depotr.config import add_depotr_config
from depotr.data.keypoint_metadata import (
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_OKS_SIGMAS,
    flip_indices,
    flip_pairs,
    keypoint_metadata_from_config,
)
from depotr.modeling import KeypointBranch
from depotr.modeling.box_sources import (
    GtBoxes,
    PrecomputedBoxes,
    select_boxes,
)
from depotr.modeling.crop_augmentation import CropAugmentation, jitter_boxes
from depotr.modeling.crops import box_crop_params, crop_to_image
from depotr.modeling.heads import BranchOutputs
from depotr.modeling.meta_arch import TopDownPoseEstimator, rescore_instances
from depotr.modeling.tta import flip_test

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
COCO_FLIP = flip_indices(COCO_PERSON_KEYPOINT_NAMES, flip_pairs())
K = 17
CROP = (32, 24)
KEYPOINT_SCORES = torch.linspace(0.05, 0.95, K)  # 13 of them > 0.2


def _side(flip: Sequence[int]) -> torch.Tensor:
    """+1 for the lower index of a left/right pair, -1 for the higher, 0 for unpaired."""
    return torch.tensor([float((f > k) - (f < k)) for k, f in enumerate(flip)])


@dataclass
class DoubleOutputs(BranchOutputs):
    """The test double's outputs: coords (B, K, 2) crop pixels, scores (B, K); averaged
    elementwise (``BranchOutputs.average``)."""

    coords: torch.Tensor
    scores: torch.Tensor


class BranchDouble(KeypointBranch):
    """TEST DOUBLE of the keypoint-branch contract (crop_size, forward, losses, decode,
    flip_back). Outputs :class:`DoubleOutputs`.

    mode "centre": every keypoint at the crop centre plus ``bias`` (x), scores KEYPOINT_SCORES.
    mode "mirror": exactly mirror-equivariant: the exp(channel 0)-weighted centroid of the crop,
    shifted +-2 px in x for left/right keypoints and by a pair-symmetric amount in y.
    """

    def __init__(self, mode: str = "centre", crop_size=CROP, bias: float = 0.0):
        super().__init__()
        self.mode = mode
        self.crop_size = crop_size
        self.bias = bias
        self.gain = nn.Parameter(torch.ones(()))
        self.last_targets = self.last_crops = None

    def forward(self, crops: torch.Tensor) -> DoubleOutputs:
        self.last_crops = crops.detach().clone()
        n = crops.shape[0]
        h, w = self.crop_size
        if self.mode == "centre":
            coords = torch.tensor([w / 2 + self.bias, h / 2]).expand(n, K, 2) * self.gain
            scores = KEYPOINT_SCORES.expand(n, K) * self.gain
        else:
            weight = crops[:, 0].exp()  # (B, H, W)
            xs = torch.arange(w, dtype=crops.dtype) + 0.5
            ys = torch.arange(h, dtype=crops.dtype) + 0.5
            total = weight.sum(dim=(1, 2))
            cx = (weight * xs).sum(dim=(1, 2)) / total
            cy = (weight * ys[:, None]).sum(dim=(1, 2)) / total
            pair = torch.tensor([float(min(k, f)) for k, f in enumerate(COCO_FLIP)])
            x = cx[:, None] + 2.0 * _side(COCO_FLIP)
            y = cy[:, None] + 0.1 * pair
            coords = torch.stack([x, y], dim=-1) * self.gain
            scores = torch.sigmoid(crops.mean(dim=(1, 2, 3))[:, None] + 0.01 * pair) * self.gain
        return DoubleOutputs(coords, scores)

    def losses(self, outputs, gt_keypoints):
        self.last_targets = gt_keypoints.detach().clone()
        h, w = self.crop_size
        xy = gt_keypoints[..., :2]
        inside = (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)
        mask = ((gt_keypoints[..., 2] > 0) & inside).to(xy.dtype)
        err = ((outputs.coords - xy) ** 2).sum(-1) * mask
        return {"loss_keypoints": err.sum() / mask.sum().clamp(min=1)}

    def decode(self, outputs):
        return torch.cat([outputs.coords, outputs.scores[..., None]], dim=-1)

    def flip_back(self, outputs, flip_indices):
        coords = outputs.coords.clone()
        coords[..., 0] = self.crop_size[1] - coords[..., 0]
        return DoubleOutputs(coords[:, flip_indices], outputs.scores[:, flip_indices])


def make_model(branch=None, **kwargs) -> TopDownPoseEstimator:
    args = dict(
        keypoint_branch=branch or BranchDouble(),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
        flip_indices=COCO_FLIP,
        input_format="RGB",
    )
    args.update(kwargs)
    return TopDownPoseEstimator(**args)


def make_augmentation(**kwargs) -> CropAugmentation:
    """The crop-time augmentation for CROP crops padded 1.25 (the model's default)."""
    return CropAugmentation(crop_size=CROP, padding=1.25, flip_indices=COCO_FLIP, **kwargs)


def make_input(image_id, num_persons: int, generator: torch.Generator, size=(48, 64), labelled=True) -> dict:
    """One data-mapper-style input with ``num_persons`` gt persons and as many proposals."""
    h, w = size
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator)
    xy0 = torch.rand((num_persons, 2), generator=generator) * torch.tensor([w * 0.6, h * 0.6])
    wh = torch.rand((num_persons, 2), generator=generator) * 20 + 4
    boxes = torch.cat([xy0, xy0 + wh], dim=1)
    kpts = torch.zeros((num_persons, K, 3))
    kpts[..., :2] = xy0[:, None] + torch.rand((num_persons, K, 2), generator=generator) * wh[:, None]
    kpts[..., 2] = torch.randint(0, 3, (num_persons, K), generator=generator).float() if labelled else 0.0
    kpts[kpts[..., 2] == 0] = 0.0
    instances = Instances((h, w))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.zeros(num_persons, dtype=torch.int64)
    instances.gt_keypoints = Keypoints(kpts)
    proposals = Instances((h, w))
    proposals.proposal_boxes = Boxes(boxes.clone())
    proposals.scores = torch.rand(num_persons, generator=generator) * 0.5 + 0.5
    return {
        "image": image,
        "height": h,
        "width": w,
        "image_id": image_id,
        "instances": instances,
        "proposals": proposals,
    }


# ---------------------------------------------------------------------------------------------
# Training


@pytest.mark.parametrize("counts", [(0, 1), (1, 3), (3, 0), (0, 0)], ids=["0+1", "1+3", "3+0", "0+0"])
@pytest.mark.parametrize("seed", [0, 1])
def test_train_forward_losses_backprop(counts, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    augmentation = make_augmentation(scale=0.25, shift=0.1, rotation_degrees=30, rotation_prob=0.5)
    model = make_model(crop_augmentation=augmentation).train()
    inputs = [make_input(f"img{i}", n, g) for i, n in enumerate(counts)]
    losses = model(inputs)
    assert set(losses) == {"loss_keypoints"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.keypoint_branch.gain.grad is not None and torch.isfinite(model.keypoint_branch.gain.grad)
    if sum(counts) == 0:
        assert total.item() == 0.0 and model.keypoint_branch.gain.grad.item() == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_train_targets_are_gt_keypoints_in_crop_pixels(seed):
    g = torch.Generator().manual_seed(seed)
    model = make_model().train()  # no jitter: crop boxes are known
    inputs = [make_input("a", 2, g), make_input("b", 0, g), make_input("c", 3, g)]
    inputs[2]["instances"].gt_keypoints.tensor[1, :, 2] = 0  # no labelled keypoint -> skipped
    inputs[2]["instances"].gt_keypoints.tensor[1, :, :2] = 0
    model(inputs)
    kept = [x["instances"][(x["instances"].gt_keypoints.tensor[..., 2] > 0).any(dim=1)] for x in inputs]
    params = torch.cat([box_crop_params(x.gt_boxes.tensor, CROP, 1.25) for x in kept])
    gt = torch.cat([x.gt_keypoints.tensor for x in kept])
    targets = model.keypoint_branch.last_targets
    assert targets.shape == (4, K, 3)
    torch.testing.assert_close(crop_to_image(targets, params, CROP), gt, rtol=0, atol=1e-4)


@pytest.mark.parametrize("sampling_ratio", [0, 2], ids=["adaptive", "sr2"])
def test_training_and_inference_cut_the_same_crop_for_the_same_box(sampling_ratio):
    """Augmentation off: the crops the branch gets in training equal those it gets at inference,
    images of two sizes in one batch, a box crossing the border clipped in both."""
    g = torch.Generator().manual_seed(2)
    inputs = [make_input("a", 3, g, size=(64, 64)), make_input("b", 2, g, size=(96, 72))]
    inputs[0]["instances"].gt_boxes.tensor[0] = torch.tensor([-10.0, 5.0, 30.0, 70.0])
    model = make_model(box_source=GtBoxes(), crop_sampling_ratio=sampling_ratio)
    model.train()(inputs)
    train_crops = model.keypoint_branch.last_crops
    with torch.no_grad():
        model.eval()(inputs)
    assert train_crops.shape == (5, 3, *CROP)
    torch.testing.assert_close(model.keypoint_branch.last_crops, train_crops, rtol=0, atol=0)


def test_train_degenerate_gt_box_raises():
    g = torch.Generator().manual_seed(0)
    inputs = [make_input("img7", 2, g)]
    inputs[0]["instances"].gt_boxes.tensor[1, 2] = inputs[0]["instances"].gt_boxes.tensor[1, 0]
    with pytest.raises(ValueError, match=r"gt person box 1 of image 'img7'"):
        make_model().train()(inputs)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale,shift", [(0.25, 0.1), (0.5, 0.0), (0.0, 0.3)], ids=["s.25t.1", "s.5", "t.3"])
def test_jitter_boxes_within_bounds(seed, scale, shift):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand((200, 2), generator=g) * 100
    boxes = torch.cat([boxes, boxes + torch.rand((200, 2), generator=g) * 50 + 1], dim=1)
    torch.manual_seed(seed)
    out = jitter_boxes(boxes, scale, shift)
    torch.manual_seed(seed)
    assert torch.equal(out, jitter_boxes(boxes, scale, shift)), "seeded jitter must repeat"
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ratio_w = (out[:, 2] - out[:, 0]) / w
    ratio_h = (out[:, 3] - out[:, 1]) / h
    eps = 1e-5
    torch.testing.assert_close(ratio_w, ratio_h)
    assert bool(((ratio_w >= 1 - scale - eps) & (ratio_w <= 1 + scale + eps)).all())
    shift_x = ((out[:, 0] + out[:, 2]) - (boxes[:, 0] + boxes[:, 2])) / 2 / w
    shift_y = ((out[:, 1] + out[:, 3]) - (boxes[:, 1] + boxes[:, 3])) / 2 / h
    assert bool((shift_x.abs() <= shift + eps).all() and (shift_y.abs() <= shift + eps).all())
    # Independent per box and actually random.
    assert ratio_w.std() > scale / 10 if scale else shift_x.std() > shift / 10


def test_jitter_boxes_disabled_is_identity():
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0]])
    assert torch.equal(jitter_boxes(boxes, 0.0, 0.0), boxes)
    with pytest.raises(ValueError):
        jitter_boxes(boxes, 1.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Inference


@pytest.mark.parametrize("counts", [(0, 1), (1, 3), (3, 0)], ids=["0+1", "1+3", "3+0"])
@pytest.mark.parametrize("source", ["precomputed", "gt"])
def test_inference_centre_branch_gives_box_centres(counts, source):
    g = torch.Generator().manual_seed(sum(counts))
    model = make_model(box_source={"gt": GtBoxes, "precomputed": PrecomputedBoxes}[source]()).eval()
    inputs = [make_input(f"img{i}", n, g) for i, n in enumerate(counts)]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for x, out, n in zip(inputs, outputs, counts):
        inst = out["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_keypoints", "pred_classes", "box_index"}
        assert len(inst) == n and inst.pred_keypoints.shape == (n, K, 3) and inst.scores.shape == (n,)
        assert inst.pred_classes.dtype == torch.int64 and bool((inst.pred_classes == 0).all())
        if source == "gt":
            boxes, box_scores, order = x["instances"].gt_boxes.tensor, torch.ones(n), torch.arange(n)
        else:
            box_scores, order = x["proposals"].scores.sort(descending=True)
            boxes = x["proposals"].proposal_boxes.tensor[order]
        torch.testing.assert_close(inst.pred_boxes.tensor, boxes)
        assert torch.equal(inst.box_index, order)  # each person's box in its source
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        torch.testing.assert_close(inst.pred_keypoints[..., :2], centres[:, None].expand(n, K, 2))
        torch.testing.assert_close(inst.pred_keypoints[..., 2], KEYPOINT_SCORES.expand(n, K))
        torch.testing.assert_close(inst.scores, box_scores * KEYPOINT_SCORES[KEYPOINT_SCORES > 0.2].mean())


def test_inference_scales_to_original_height_width():
    """Outputs are in "height" x "width" (detector_postprocess) when the mapper resized."""
    g = torch.Generator().manual_seed(3)
    x = make_input("img", 2, g, size=(40, 60))
    x["height"], x["width"] = 80, 120
    with torch.no_grad():
        inst = make_model().eval()([x])[0]["instances"]
    boxes = x["proposals"].proposal_boxes.tensor[x["proposals"].scores.argsort(descending=True)]
    assert inst.image_size == (80, 120)
    torch.testing.assert_close(inst.pred_boxes.tensor, boxes * 2)
    torch.testing.assert_close(inst.pred_keypoints[..., :2], (boxes[:, None, :2] + boxes[:, None, 2:]).expand(2, K, 2))


def test_inference_box_crossing_border_is_clipped_and_inputs_unchanged():
    g = torch.Generator().manual_seed(4)
    x = make_input("img", 1, g, size=(48, 64))
    x["instances"].gt_boxes.tensor[0] = torch.tensor([-10.0, 20.0, 30.0, 60.0])
    x["height"], x["width"] = 96, 128  # outputs scaled x2 (detector_postprocess)
    before = x["instances"].gt_boxes.tensor.clone()
    with torch.no_grad():
        inst = make_model(box_source=GtBoxes()).eval()([x])[0]["instances"]
    assert torch.equal(x["instances"].gt_boxes.tensor, before)
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[0.0, 40.0, 60.0, 96.0]]))
    # The person is cropped around the clipped box [0, 20, 30, 48], as Detectron2 crops.
    torch.testing.assert_close(inst.pred_keypoints[0, :, :2], torch.tensor([30.0, 68.0]).expand(K, 2))


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("layout", ["HWC", "gray", "HW"])
def test_image_of_wrong_layout_is_named(training, layout):
    """An (H, W, 3) or one-channel image raised a RuntimeError of the crop's arithmetic."""
    g = torch.Generator().manual_seed(9)
    x = make_input("img7", 2, g, size=(48, 64))
    x["image"] = {"HWC": x["image"].permute(1, 2, 0), "gray": x["image"][:1], "HW": x["image"][0]}[layout]
    model = make_model(box_source=GtBoxes()).train(training)
    with pytest.raises(ValueError, match=r"image 'img7'.*\(3, H, W\) tensor in RGB order.*got shape"):
        model([x])


@pytest.mark.parametrize("scale", [1e3, 1e30], ids=["1e3", "1e30"])
def test_inference_keeps_keypoints_of_huge_boxes_near_the_image_and_reports_boxes_outside(scale, caplog):
    g = torch.Generator().manual_seed(6)
    x = make_input("img", 3, g, size=(48, 64))
    x["proposals"].proposal_boxes.tensor[:] = torch.tensor(
        [[-scale, -scale, scale, scale], [70.0, 10.0, 90.0, 40.0], [5.0, 5.0, 20.0, 30.0]]
    )  # 2nd: right of the image
    x["proposals"].scores = torch.tensor([0.9, 0.8, 0.7])
    with caplog.at_level("WARNING", logger="depotr.modeling.box_sources"), torch.no_grad():
        inst = make_model().eval()([x])[0]["instances"]
    assert inst.box_index.tolist() == [0, 2]
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 64.0, 48.0], [5.0, 5.0, 20.0, 30.0]]))
    torch.testing.assert_close(inst.pred_keypoints[:, 0, :2], torch.tensor([[32.0, 24.0], [12.5, 17.5]]))
    assert "Image 'img': dropped precomputed person boxes [[70.0, 10.0, 90.0, 40.0]] (indices [1])" in caplog.text


@pytest.mark.parametrize(
    "thresh,topk,expected",
    [(0.0, 100, [3, 1, 0, 2]), (0.5, 100, [3, 1, 0]), (0.0, 2, [3, 1]), (0.5, 0, [3, 1, 0]), (0.95, 5, [])],
    ids=["all", "thresh", "topk", "no-limit", "none"],
)
def test_select_boxes_threshold_topk(thresh, topk, expected):
    scores = torch.tensor([0.5, 0.7, 0.2, 0.9])
    boxes = torch.arange(16, dtype=torch.float32).view(4, 4)
    out_boxes, out_scores = select_boxes(boxes, scores, thresh, topk)
    assert torch.equal(out_boxes, boxes[expected]) and torch.equal(out_scores, scores[expected])


def test_inference_applies_box_threshold_and_topk():
    g = torch.Generator().manual_seed(5)
    x = make_input("img", 3, g)
    x["proposals"].scores = torch.tensor([0.3, 0.9, 0.6])
    with torch.no_grad():
        inst = make_model(box_source=PrecomputedBoxes(score_thresh=0.5, topk=1)).eval()([x])[0]["instances"]
    torch.testing.assert_close(inst.pred_boxes.tensor, x["proposals"].proposal_boxes.tensor[1:2])


def test_missing_proposals_error_names_image():
    g = torch.Generator().manual_seed(0)
    inputs = [make_input("img1", 1, g), make_input("img2", 1, g)]
    del inputs[1]["proposals"]
    with pytest.raises(KeyError, match=r"image 'img2' has no 'proposals'.*proposal_boxes"):
        make_model(box_source=PrecomputedBoxes()).eval()(inputs)


@pytest.mark.parametrize(
    "scores,expected",
    [([0.9, 0.5, 0.1, 0.3], 0.8 * (0.9 + 0.5 + 0.3) / 3), ([0.1, 0.2, 0.15, 0.05], 0.8 * 0.125)],
    ids=["mean-above-thresh", "none-above-falls-back-to-mean"],
)
def test_rescore_instances(scores, expected):
    out = rescore_instances(torch.tensor([0.8]), torch.tensor([scores]), 0.2)
    torch.testing.assert_close(out, torch.tensor([expected]))


# ---------------------------------------------------------------------------------------------
# Flip test


@pytest.mark.parametrize("seed", [0, 1])
def test_flip_test_of_mirror_equivariant_branch_is_identity(seed):
    g = torch.Generator().manual_seed(seed)
    branch = BranchDouble("mirror")
    crops = torch.randn((5, 3, *CROP), generator=g)
    plain = branch(crops)
    flipped = flip_test(branch, crops, COCO_FLIP)
    assert type(flipped) is DoubleOutputs
    for key in ("coords", "scores"):
        torch.testing.assert_close(getattr(flipped, key), getattr(plain, key), rtol=0, atol=1e-4)
    # ... and through the meta-architecture.
    inputs = [make_input("a", 2, g), make_input("b", 3, g)]
    with torch.no_grad():
        out_plain = make_model(branch, test_flip=False).eval()(inputs)
        out_flip = make_model(branch, test_flip=True).eval()(inputs)
    for a, b in zip(out_plain, out_flip):
        torch.testing.assert_close(a["instances"].pred_keypoints, b["instances"].pred_keypoints, rtol=0, atol=1e-4)
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores, rtol=0, atol=1e-5)


def test_flip_test_cancels_a_horizontal_bias():
    """A branch biased +3 px in x is biased -3 px on the mirrored crop: the flip test averages
    them back to the crop centre, so it must really flip, flip back and average."""
    crops = torch.zeros((2, 3, *CROP))
    out = flip_test(BranchDouble("centre", bias=3.0), crops, COCO_FLIP)
    torch.testing.assert_close(out.coords[..., 0], torch.full((2, K), CROP[1] / 2))


# ---------------------------------------------------------------------------------------------
# Configs and the real keypoint branches

CONFIG_FILES = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))
THESIS_CONFIGS = [
    ("depotr_r50.yaml", "regression", (256, 192), 50),
    ("depotr_hm_r50.yaml", "heatmap", (256, 192), 50),
    ("depotr_hm_r152_384x288.yaml", "heatmap", (384, 288), 152),
    ("simple_baseline_r50.yaml", "simple_baseline", (256, 192), 50),
    ("transpose_r50.yaml", "transpose", (256, 192), 50),
]


def _load(name: str, opts=()):
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.merge_from_file(str(CONFIG_DIR / name))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_loads_and_builds(name):
    from detectron2.modeling import build_model

    cfg = _load(name)
    assert cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator"
    # COCO's 17 keypoints, or the MPII / CrowdPose configs' own (docs/datasets.md); sigmas from the table.
    num_keypoints = len(cfg.MODEL.DEPOTR.KEYPOINT_NAMES) or 17
    assert not cfg.TEST.KEYPOINT_OKS_SIGMAS and cfg.MODEL.DEPOTR.NUM_KEYPOINTS == num_keypoints
    sigmas = keypoint_metadata_from_config(cfg).oks_sigmas  # the table's, not typed again
    assert len(sigmas) == num_keypoints
    if num_keypoints == 17:
        assert sigmas == COCO_PERSON_OKS_SIGMAS
    assert len(cfg.MODEL.PIXEL_MEAN) == len(cfg.MODEL.PIXEL_STD) == 3
    model = build_model(cfg)
    assert isinstance(model, TopDownPoseEstimator)
    flip = COCO_FLIP if num_keypoints == 17 else list(keypoint_metadata_from_config(cfg).flip_indices)
    assert model.crop_size == tuple(cfg.INPUT.CROP_SIZE) and model.flip_indices == flip


@pytest.mark.parametrize("name,head,crop,depth", THESIS_CONFIGS, ids=[c[0] for c in THESIS_CONFIGS])
def test_config_values(name, head, crop, depth):
    cfg = _load(name)
    assert (cfg.MODEL.DEPOTR.HEAD, tuple(cfg.INPUT.CROP_SIZE), cfg.MODEL.RESNETS.DEPTH) == (head, crop, depth)
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_MEAN == [123.675, 116.280, 103.530]
    assert cfg.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.BASE_LR == 1e-4 and cfg.SOLVER.BACKBONE_MULTIPLIER == 0.1
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.1 and cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupLinearLR"
    assert cfg.DATASETS.TRAIN == ("keypoints_coco_2017_train",) and cfg.DATASETS.TEST == ("keypoints_coco_2017_val",)


def test_unknown_config_key_raises(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{CONFIG_DIR / "depotr_r50.yaml"}"\nMODEL:\n  DEPOTR:\n    BOX_SORUCE: "gt"\n')
    cfg = get_cfg()
    add_depotr_config(cfg)
    with pytest.raises(KeyError, match="BOX_SORUCE"):
        cfg.merge_from_file(str(bad))


SMALL_MODEL = [
    "MODEL.RESNETS.DEPTH",
    18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    64,
    "MODEL.DEPOTR.HIDDEN_DIM",
    64,
    "MODEL.DEPOTR.NHEADS",
    2,
    "MODEL.DEPOTR.ENC_LAYERS",
    1,
    "MODEL.DEPOTR.DEC_LAYERS",
    1,
    "MODEL.DEPOTR.DIM_FEEDFORWARD",
    128,
    "INPUT.CROP_SIZE",
    (64, 48),
    "TEST.FLIP",
    True,
]


@pytest.mark.parametrize(
    "name", ["depotr_r50.yaml", "depotr_rle_r50.yaml", "depotr_hm_r50.yaml"], ids=["regression", "rle", "heatmap"]
)
def test_real_keypoint_branch_train_and_inference(name):
    """The meta-architecture with the real build_keypoint_branch (small): train on persons and on
    an empty batch, then flip-test inference with precomputed boxes. (The RLE config also runs its
    half-body boxes, normal-distributed jitter and deep supervision.)"""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(_load(name, SMALL_MODEL)).train()
    g = torch.Generator().manual_seed(0)
    losses = model([make_input("a", 0, g, size=(80, 64)), make_input("b", 2, g, size=(64, 96))])
    assert losses and all(k.startswith("loss_") and torch.isfinite(v) for k, v in losses.items())
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    model.zero_grad(set_to_none=True)
    losses = model([make_input("c", 0, g), make_input("d", 0, g)])
    assert all(v.item() == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and not p.grad.any() for p in trainable)

    model.eval()
    inputs = [make_input("e", 3, g, size=(80, 64)), make_input("f", 0, g)]
    with torch.no_grad():
        outputs = model(inputs)
    for x, out in zip(inputs, outputs):
        inst = out["instances"]
        n = len(x["proposals"])
        assert inst.image_size == (x["height"], x["width"]) and inst.pred_keypoints.shape == (n, K, 3)
        assert bool(torch.isfinite(inst.pred_keypoints).all() and torch.isfinite(inst.scores).all())


def test_test_precision_reaches_the_branch_and_bad_values_are_named():
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(_load("depotr_hm_r50.yaml", [*SMALL_MODEL, "TEST.PRECISION", "bfloat16"])).eval()
    dtypes = []
    linear = next(m for m in model.keypoint_branch.body.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, a, o: dtypes.append(o.dtype))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        (out,) = model([make_input("a", 2, g, size=(80, 64))])
    assert dtypes == [torch.bfloat16] and out["instances"].pred_keypoints.dtype == torch.float32
    with pytest.raises(ValueError, match=r"TEST.PRECISION must be one of .*'bfloat16'.*got 'bf16'"):
        build_model(_load("depotr_hm_r50.yaml", [*SMALL_MODEL, "TEST.PRECISION", "bf16"]))


def test_float16_inference_on_a_cpu_is_warned_about(caplog):
    from detectron2.modeling import build_model

    with caplog.at_level("WARNING"):
        build_model(_load("depotr_hm_r50.yaml", [*SMALL_MODEL, "TEST.PRECISION", "float16"]))
    assert "TEST.PRECISION float16 on a CPU" in caplog.text


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_on_a_cpu_without_native_bfloat16_is_warned_about(caplog, monkeypatch, native):
    """The friction: on an AVX2-only CPU, TEST.PRECISION bfloat16 ran the R50 branch 19.5x slower than
    float32 (2 persons with flip: 19.3 s against 0.99 s), without a word."""
    from detectron2.modeling import build_model

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with caplog.at_level("WARNING"):
        build_model(_load("depotr_hm_r50.yaml", [*SMALL_MODEL, "TEST.PRECISION", "bfloat16"]))
        build_model(_load("depotr_hm_r50.yaml", [*SMALL_MODEL]))  # float32: never warned
    expected = [] if native else ["TEST.PRECISION bfloat16 on a CPU without avx512_bf16 or AMX"]
    assert [m.split(" (")[0] for m in caplog.messages if "avx512_bf16" in m] == expected
