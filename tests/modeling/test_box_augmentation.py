"""The crop-time augmentation chain (INPUT.CROP_AUG): half-body boxes (with the body halves of the
keypoint table), the jitter and rotation distributions, flips with the table's flip indices, and
the chain inside the meta-architecture."""

import pytest
import torch

from detectron2.config import get_cfg

from depotr.config import add_depotr_config
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, upper_body_mask
from depotr.modeling.crop_augmentation import CropAugmentation, HalfBodyBoxes, draw_angles, jitter_boxes
from depotr.modeling.crops import box_crop_params, crop_images, expand_boxes_to_aspect, image_to_crop
from depotr.modeling.meta_arch import TopDownPoseEstimator

from .test_meta_arch import COCO_FLIP, BranchDouble, make_augmentation, make_input, make_model

K = 17
CROP = (32, 24)  # (H, W): aspect W / H = 0.75
UPPER = upper_body_mask(COCO_PERSON_KEYPOINT_NAMES)


def test_upper_body_mask_is_hrnets_split():
    # HRNet's coco.py: upper_body_ids = (0, ..., 10): head, shoulders, elbows, wrists.
    assert UPPER == [True] * 11 + [False] * 6
    with pytest.raises(ValueError, match=r"\['tail'\] have no body half"):
        upper_body_mask(["nose", "tail"])


def _person(labelled, seed=0):
    """(1, K, 3) keypoints at random positions in [10, 90]^2, labelled (v = 2) at ``labelled``."""
    g = torch.Generator().manual_seed(seed)
    kpts = torch.zeros(1, K, 3)
    kpts[0, :, :2] = 10 + torch.rand(K, 2, generator=g) * 80
    kpts[0, list(labelled), 2] = 2
    kpts[kpts[..., 2] == 0] = 0
    return kpts


def _tight_box(kpts, indices):
    xy = kpts[0, list(indices), :2]
    return torch.cat([xy.min(0).values, xy.max(0).values])[None]


PERSON_BOX = torch.tensor([[0.0, 0.0, 100.0, 100.0]])


@pytest.mark.parametrize(
    "labelled, halves",
    [
        (range(17), ("upper", "lower")),  # both qualify: either
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12], ("upper",)),  # 2 lower keypoints: upper only
        ([0, 1, 5, 11, 12, 13, 14, 15, 16], ("lower",)),  # 3 upper, min_part 4: lower only
    ],
    ids=["both", "upper_only", "lower_only"],
)
def test_half_body_box_is_the_padded_box_of_the_chosen_half(labelled, halves):
    kpts = _person(labelled)
    min_part = 4 if halves == ("lower",) else 3
    half_body = HalfBodyBoxes(UPPER, CROP, prob=1.0, min_keypoints=9, min_part_keypoints=min_part, padding=1.2)
    candidates = {}
    for half in ("upper", "lower"):
        indices = [k for k in labelled if UPPER[k] == (half == "upper")]
        candidates[half] = expand_boxes_to_aspect(_tight_box(kpts, indices), CROP, 1.2)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        box = half_body(PERSON_BOX, kpts)
        matches = [h for h in halves if torch.allclose(box, candidates[h])]
        assert len(matches) == 1, f"seed {seed}: {box} is none of the padded half boxes {candidates}"
        seen.add(matches[0])
        # It contains exactly the chosen half's keypoints once the padding is taken off.
        chosen = [k for k in labelled if UPPER[k] == (matches[0] == "upper")]
        xy = kpts[0, chosen, :2]
        assert bool(((xy >= box[0, :2]) & (xy <= box[0, 2:])).all())
        w, h = box[0, 2] - box[0, 0], box[0, 3] - box[0, 1]
        assert w > 0 and h > 0 and torch.isclose(w / h, torch.tensor(0.75))
        tight = _tight_box(kpts, chosen)[0]
        assert torch.isclose(max((tight[2] - tight[0]) / w, (tight[3] - tight[1]) / h), torch.tensor(1 / 1.2))
    assert seen == set(halves)


def test_half_body_box_of_collinear_keypoints_is_not_empty():
    kpts = _person(range(17))
    kpts[0, :11, 0] = 40.0  # upper body on a vertical line: zero width
    kpts[0, 11:, 2] = 0  # no lower body
    kpts[0, :11, 2] = 2
    box = HalfBodyBoxes(UPPER, CROP, prob=1.0, min_keypoints=9)(PERSON_BOX, kpts)
    height = (kpts[0, :11, 1].max() - kpts[0, :11, 1].min()) * 1.2
    torch.testing.assert_close(box[0, 3] - box[0, 1], height)
    torch.testing.assert_close(box[0, 2] - box[0, 0], height * 0.75)


@pytest.mark.parametrize(
    "labelled, min_part, coincide",
    [
        (range(8), 3, False),  # 8 labelled < min_keypoints 9
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12], 3, True),  # the upper half's 9 keypoints at one point
        ([0, 1, 2, 11, 12, 13, 14, 15, 16], 7, False),  # halves of 3 and 6 < 7
    ],
    ids=["8_labelled", "coinciding_keypoints", "no_half_qualifies"],
)
def test_half_body_keeps_the_person_box_when_it_cannot_apply(labelled, min_part, coincide):
    kpts = _person(labelled)
    if coincide:
        kpts[0, :11, :2] = 50.0
    half_body = HalfBodyBoxes(UPPER, CROP, prob=1.0, min_keypoints=9, min_part_keypoints=min_part)
    torch.manual_seed(0)
    assert torch.equal(half_body(PERSON_BOX, kpts), PERSON_BOX)


def test_half_body_probability_and_batch_shapes():
    kpts = _person(range(17)).expand(2000, K, 3)
    boxes = PERSON_BOX.expand(2000, 4)
    torch.manual_seed(0)
    out = HalfBodyBoxes(UPPER, CROP, prob=0.3)(boxes, kpts)
    replaced = (out != boxes).any(dim=1).float().mean().item()
    assert replaced == pytest.approx(0.3, abs=0.03)
    assert HalfBodyBoxes(UPPER, CROP, prob=0.3)(boxes[:0], kpts[:0]).shape == (0, 4)


def test_half_body_bad_arguments_raise():
    with pytest.raises(ValueError, match="HALF_BODY_PROB"):
        HalfBodyBoxes(UPPER, CROP, prob=1.5)
    with pytest.raises(ValueError, match="HALF_BODY_MIN_PART_KEYPOINTS"):
        HalfBodyBoxes(UPPER, CROP, prob=0.3, min_part_keypoints=1)
    with pytest.raises(ValueError, match="HALF_BODY_PADDING"):
        HalfBodyBoxes(UPPER, CROP, prob=0.3, padding=0.9)
    with pytest.raises(ValueError, match="upper- and lower-body"):
        HalfBodyBoxes([True] * K, CROP, prob=0.3)
    with pytest.raises(ValueError, match="for 17 keypoints got 5"):
        HalfBodyBoxes(UPPER, CROP, prob=0.3)(PERSON_BOX, torch.zeros(1, 5, 3))


def test_training_crops_are_the_half_body_boxes():
    """prob 1, no jitter: the crop box of every eligible person is its half-body box."""
    g = torch.Generator().manual_seed(0)
    inputs = [make_input("a", 4, g, size=(64, 96))]
    kpts = inputs[0]["instances"].gt_keypoints.tensor
    kpts[:, :, 2] = 2  # all labelled: every person is eligible
    half_body = HalfBodyBoxes(UPPER, CROP, prob=1.0)
    augmentation = make_augmentation(flip_prob=0.0, half_body=half_body)
    model = make_model(crop_augmentation=augmentation).train()
    torch.manual_seed(0)
    model(inputs)
    torch.manual_seed(0)
    expected = expand_boxes_to_aspect(half_body(inputs[0]["instances"].gt_boxes.tensor, kpts), CROP, 1.25)
    targets = model.keypoint_branch.last_targets  # gt keypoints in crop pixels of those boxes
    scale = torch.tensor([CROP[1], CROP[0]]) / (expected[:, None, 2:] - expected[:, None, :2])
    torch.testing.assert_close(targets[..., :2], (kpts[..., :2] - expected[:, None, :2]) * scale)


def _cfg(*opts):
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH",
            18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.DEPOTR.HIDDEN_DIM",
            32,
            "MODEL.DEPOTR.NHEADS",
            2,
            "MODEL.DEPOTR.ENC_LAYERS",
            1,
            "MODEL.DEPOTR.DEC_LAYERS",
            1,
            "MODEL.DEPOTR.DIM_FEEDFORWARD",
            64,
            "DATASETS.TRAIN",
            (),
            *opts,
        ]
    )
    return cfg


def test_chain_from_config_only_when_enabled():
    default = TopDownPoseEstimator(_cfg()).crop_augmentation
    assert default.half_body is None and default.flip_prob == 0.5  # default HALF_BODY_PROB 0
    assert (default.scale, default.shift, default.rotation) == (0.25, 0.1, (10.0, 0.5, "uniform"))
    on = TopDownPoseEstimator(
        _cfg(
            "INPUT.CROP_AUG.HALF_BODY_PROB",
            0.3,
            "INPUT.CROP_AUG.HALF_BODY_MIN_PART_KEYPOINTS",
            4,
            "INPUT.CROP_AUG.ROTATION_DISTRIBUTION",
            "normal",
            "INPUT.CROP_AUG.SCALE_DISTRIBUTION",
            "normal",
        )
    ).crop_augmentation
    assert (on.half_body.prob, on.half_body.min_part_keypoints, on.half_body.upper_body) == (0.3, 4, UPPER)
    assert on.scale_distribution == "normal" and on.rotation[2] == "normal"
    assert on.flip_indices.tolist() == COCO_FLIP
    assert TopDownPoseEstimator(_cfg("INPUT.CROP_AUG.ENABLED", False)).crop_augmentation is None
    for key in ("SCALE_DISTRIBUTION", "ROTATION_DISTRIBUTION"):
        with pytest.raises(ValueError, match=f"{key} must be one of"):
            TopDownPoseEstimator(_cfg(f"INPUT.CROP_AUG.{key}", "gaussian"))
    with pytest.raises(ValueError, match="FLIP_PROB must be in"):
        make_augmentation(flip_prob=1.5)
    with pytest.raises(ValueError, match="half_body crop_size"):
        make_augmentation(half_body=HalfBodyBoxes(UPPER, (64, 48), prob=0.3))
    with pytest.raises(ValueError, match="crop_augmentation crops"):
        make_model(
            BranchDouble(), crop_augmentation=CropAugmentation(crop_size=CROP, padding=1.5, flip_indices=COCO_FLIP)
        )


@pytest.mark.parametrize("distribution, at_bound", [("uniform", 0.0), ("normal", 0.317)])
def test_jitter_distribution(distribution, at_bound):
    """r = U[-1, 1], or N(0, 1) clipped to [-1, 1]: 2 P(N > 1) = 31.7 % on a bound."""
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]]).expand(4000, 4)
    torch.manual_seed(0)
    out = jitter_boxes(boxes, 0.35, 0.1, distribution)
    ratio = (out[:, 2] - out[:, 0]) / 40
    assert bool(((ratio >= 0.65 - 1e-5) & (ratio <= 1.35 + 1e-5)).all())
    on_bound = ((ratio - 1).abs() > 0.35 - 1e-5).float().mean().item()
    assert on_bound == pytest.approx(at_bound, abs=0.025)
    shift = ((out[:, 0] + out[:, 2]) / 2 - 30) / 40
    assert bool((shift.abs() <= 0.1 + 1e-5).all())
    with pytest.raises(ValueError, match="SCALE_DISTRIBUTION must be one of"):
        jitter_boxes(boxes, 0.35, 0.1, "gaussian")


@pytest.mark.parametrize("distribution, beyond, bound", [("uniform", 0.0, 10.0), ("normal", 0.317, 20.0)])
def test_rotation_angle_distribution(distribution, beyond, bound):
    """uniform in +-10; normal N(0, 10) clipped to +-20: 2 P(N > 1) = 31.7 % beyond 10 degrees,
    2 P(N > 2) = 4.55 % on the clip; rotated with probability 0.6."""
    torch.manual_seed(0)
    angles = draw_angles(8000, 10.0, 0.6, distribution, torch.zeros(()))
    rotated = angles[angles != 0].abs()
    assert len(rotated) / 8000 == pytest.approx(0.6, abs=0.02)
    assert rotated.max() <= bound + 1e-4
    assert (rotated > 10.0 + 1e-4).float().mean().item() == pytest.approx(beyond, abs=0.03)
    if distribution == "normal":
        assert (rotated > 20.0 - 1e-4).float().mean().item() == pytest.approx(0.0455, abs=0.015)


def test_flip_swaps_left_and_right_and_mirrors_crop_and_targets():
    """Flip 1 vs 0, nothing else: the crop is the mirror image, keypoint k of the flipped person
    is its mirror partner flip[k], at u -> W - u."""
    g = torch.Generator().manual_seed(0)
    inputs = [make_input("a", 3, g, size=(64, 96))]
    results = {}
    for prob in (0.0, 1.0):
        model = make_model(crop_augmentation=make_augmentation(flip_prob=prob))
        model.train()(inputs)
        results[prob] = (model.keypoint_branch.last_crops, model.keypoint_branch.last_targets)
    (plain_crops, plain), (flipped_crops, flipped) = results[0.0], results[1.0]
    torch.testing.assert_close(flipped_crops, torch.flip(plain_crops, dims=[-1]), rtol=0, atol=1e-4)
    torch.testing.assert_close(flipped[:, :, 0], CROP[1] - plain[:, COCO_FLIP, 0], rtol=0, atol=1e-4)
    torch.testing.assert_close(flipped[:, :, 1:], plain[:, COCO_FLIP, 1:], rtol=0, atol=1e-4)


def test_rotation_turns_about_the_crop_centre_and_keeps_the_person_size():
    """Rotation only: the crop centre stays on the box centre, and distances between keypoints
    scale by W / w as unrotated (a rotated person does not shrink), in targets and pixels."""
    kpts = _person(range(17)).expand(50, K, 3).clone()
    boxes = PERSON_BOX.expand(50, 4)
    augmentation = make_augmentation(flip_prob=0.0, rotation_degrees=45.0, rotation_prob=1.0)
    torch.manual_seed(0)
    params, out = augmentation(boxes, kpts)
    assert torch.equal(out, kpts) and (params[:, 4] != 0).all() and (params[:, 4].abs() <= 45).all()
    torch.testing.assert_close(params[:, :4], box_crop_params(boxes, CROP, 1.25)[:, :4])
    targets = image_to_crop(kpts, params, CROP)
    centre = image_to_crop(torch.tensor([[[50.0, 50.0]]]).expand(50, 1, 2), params, CROP)
    torch.testing.assert_close(centre, torch.tensor([[[CROP[1] / 2, CROP[0] / 2]]]).expand(50, 1, 2))
    scale = CROP[1] / params[0, 2]
    torch.testing.assert_close(
        torch.cdist(targets[..., :2], targets[..., :2]), torch.cdist(kpts[..., :2], kpts[..., :2]) * scale
    )
    # The pixels: a bright dot at a keypoint appears at its target in the rotated crop.
    image = torch.zeros((1, 100, 100))
    x, y = int(kpts[0, 0, 0]), int(kpts[0, 0, 1])
    image[0, y - 3 : y + 4, x - 3 : x + 4] = 1.0
    crop = crop_images([image], [params[:1]], CROP)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(CROP[0]) + 0.5, torch.arange(CROP[1]) + 0.5, indexing="ij")
    dot = torch.stack([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    target = image_to_crop(torch.tensor([[[x + 0.5, y + 0.5]]]), params[:1], CROP)[0, 0]
    torch.testing.assert_close(dot, target, rtol=0, atol=0.3)


def test_chain_is_reproducible_under_the_seed():
    kpts = _person(range(17)).expand(20, K, 3).clone()
    augmentation = make_augmentation(
        scale=0.35,
        shift=0.1,
        scale_distribution="normal",
        rotation_degrees=45.0,
        rotation_prob=0.6,
        rotation_distribution="normal",
        half_body=HalfBodyBoxes(UPPER, CROP, prob=0.3),
    )
    torch.manual_seed(3)
    first = augmentation(PERSON_BOX.expand(20, 4), kpts)
    torch.manual_seed(3)
    second = augmentation(PERSON_BOX.expand(20, 4), kpts)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert first[0][:, 5].unique().tolist() == [0.0, 1.0]  # some flipped, some not
