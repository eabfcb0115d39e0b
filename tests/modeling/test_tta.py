"""depotr.modeling.tta: the flip helpers and the flip test of typed outputs, against the rule the
flip test applied to output dicts before the outputs were typed (suffix-matched keys, every
output averaged)."""

from typing import Dict

import pytest
import torch

from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, flip_indices, flip_pairs
from depotr.modeling import build_keypoint_branch
from depotr.modeling.heads import HeatmapCodec, HeatmapOutputs, RLEOutputs
from depotr.modeling.tta import flip_coords, flip_heatmaps, flip_test, predict_crop_keypoints

from .test_branches import small_cfg, variant_cfg

COCO_FLIP = flip_indices(COCO_PERSON_KEYPOINT_NAMES, flip_pairs())


def test_flip_heatmaps_is_an_involution():
    torch.manual_seed(0)
    heatmaps = torch.rand(3, 17, 8, 6)
    torch.testing.assert_close(flip_heatmaps(flip_heatmaps(heatmaps, COCO_FLIP), COCO_FLIP), heatmaps)


def test_encoding_a_mirrored_crop_then_flipping_back_equals_encoding_the_original():
    torch.manual_seed(0)
    codec = HeatmapCodec((256, 192), 4, 2.0)
    keypoints = torch.rand(2, 17, 3, dtype=torch.float64) * torch.tensor([192.0, 256.0, 2.0], dtype=torch.float64)
    keypoints[..., 2] = keypoints[..., 2].round()  # some v = 0
    # On the mirrored crop, keypoint k is the mirror image (u -> W - u) of its partner.
    mirrored = keypoints[:, COCO_FLIP].clone()
    mirrored[..., 0] = 192 - mirrored[..., 0]
    mirrored_heatmaps, mirrored_weights = codec.encode(mirrored)
    heatmaps, weights = codec.encode(keypoints)
    torch.testing.assert_close(flip_heatmaps(mirrored_heatmaps, COCO_FLIP), heatmaps)
    torch.testing.assert_close(mirrored_weights[:, COCO_FLIP], weights)


def test_flip_shift_moves_one_pixel_right():
    heatmaps = torch.zeros(1, 1, 2, 4)
    heatmaps[0, 0, 0, 3] = 1.0  # mirrors to column 0, shifted to column 1; column 0 is kept
    flipped = flip_heatmaps(heatmaps, [0], shift=True)
    assert flipped[0, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_flip_heatmaps_of_aux_layers_flips_each_layer():
    torch.manual_seed(0)
    layers = torch.rand(2, 3, 17, 8, 6)  # (n-1, B, K, h, w)
    expected = torch.stack([flip_heatmaps(layer, COCO_FLIP, shift=True) for layer in layers])
    torch.testing.assert_close(flip_heatmaps(layers, COCO_FLIP, shift=True), expected)


def test_flip_coords_hand_computed():
    coords = torch.tensor([[[0.1, 0.2], [0.7, 0.4], [0.5, 0.9]]])  # (1, 3, 2); keypoints 0 and 2 a pair
    expected = torch.tensor([[[0.5, 0.9], [0.3, 0.4], [0.9, 0.2]]])
    torch.testing.assert_close(flip_coords(coords, [2, 1, 0]), expected)


# ---------------------------------------------------------------------------------------------
# The flip test of typed outputs equals the old rule on output dicts


def _old_dict(outputs) -> Dict[str, torch.Tensor]:
    """The outputs as the dict the branches returned before: "coords", "score_logits" or
    "sigmas", and "aux_"-prefixed auxiliary outputs; "heatmaps"."""
    if isinstance(outputs, HeatmapOutputs):
        return {"heatmaps": outputs.heatmaps}
    key = "sigmas" if isinstance(outputs, RLEOutputs) else "score_logits"
    old = {"coords": outputs.coords, key: outputs.confidence}
    if outputs.aux_coords is not None:
        old.update({"aux_coords": outputs.aux_coords, "aux_" + key: outputs.aux_confidence})
    return old


def _old_flip_back(outputs: Dict[str, torch.Tensor], flip: list, shift: bool) -> Dict[str, torch.Tensor]:
    """The branches' flip_back on dicts: keys ending in "coords" mirrored (x -> 1 - x), keypoints
    swapped along -1 for "score_logits" keys, -2 for the others; heatmaps array-flipped."""
    index = torch.tensor(flip)
    if "heatmaps" in outputs:
        flipped = outputs["heatmaps"].flip(-1).index_select(1, index)
        if shift:
            flipped = torch.cat((flipped[..., :1], flipped[..., :-1]), dim=-1)
        return {"heatmaps": flipped}
    flipped = {}
    for key, value in outputs.items():
        if key.endswith("coords"):
            value = torch.stack((1 - value[..., 0], value[..., 1]), dim=-1)
        flipped[key] = value.index_select(-1 if key.endswith("score_logits") else -2, index)
    return flipped


@pytest.mark.parametrize(
    "name, shift, keys",
    [
        ("regression", False, {"coords", "score_logits"}),
        ("regression_aux", False, {"coords", "score_logits", "aux_coords", "aux_score_logits"}),
        ("regression_rle", False, {"coords", "sigmas", "aux_coords", "aux_sigmas"}),
        ("heatmap", False, {"heatmaps"}),
        ("heatmap", True, {"heatmaps"}),
    ],
    ids=["logits", "logits-aux", "rle-aux", "heatmap", "heatmap-shift"],
)
def test_flip_test_of_typed_outputs_equals_the_old_dict_rule(name, shift, keys):
    cfg = variant_cfg(name, (64, 48), dec_layers=3) if name.startswith("regression") else small_cfg(name, (64, 48))
    cfg.TEST.FLIP_SHIFT_HEATMAP = shift
    torch.manual_seed(0)
    branch = build_keypoint_branch(cfg).eval()
    crops = torch.randn(3, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, mirrored = _old_dict(branch(crops)), _old_dict(branch(crops.flip(-1)))
        back = _old_flip_back(mirrored, COCO_FLIP, shift)
        expected = {key: (plain[key] + back[key]) / 2 for key in plain}
        outputs = flip_test(branch, crops, COCO_FLIP)
        keypoints = predict_crop_keypoints(branch, crops, COCO_FLIP)
    got = _old_dict(outputs)
    assert got.keys() == expected.keys() == keys
    for key in expected:  # one batch of 2N instead of two passes of N: equal up to float rounding
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(keypoints, branch.decode(outputs), rtol=0, atol=0)
    assert not torch.allclose(keypoints, branch.decode(branch(crops)))  # the flip test changed them


# ---------------------------------------------------------------------------------------------
# Inference precision (TEST.PRECISION)


@pytest.mark.parametrize("name", ["regression_iter_refine", "regression_rle", "heatmap"])
def test_bfloat16_inference_runs_the_body_in_bfloat16_and_the_head_in_float32(name):
    cfg = variant_cfg(name, (64, 48)) if name.startswith("regression") else small_cfg(name, (64, 48))
    torch.manual_seed(0)
    branch = build_keypoint_branch(cfg).eval()
    crops = torch.randn(3, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    seen = {}

    def record(module, args, output, key):
        features = args[0]
        seen[key] = {t.dtype for v in features.values() for t in (v if isinstance(v, list) else [v])}
        seen[key + "_out"] = output.dtype if torch.is_tensor(output) else output.coords.dtype

    branch.head.register_forward_hook(lambda m, a, o: record(m, a, o, "head"))
    with torch.no_grad():
        expected = predict_crop_keypoints(branch, crops, COCO_FLIP)
        linear = next(m for m in branch.body.modules() if isinstance(m, torch.nn.Linear))  # in the transformer
        hooked = linear.register_forward_hook(lambda m, a, o: seen.update(body=o.dtype))
        keypoints = predict_crop_keypoints(branch, crops, COCO_FLIP, torch.bfloat16)
        hooked.remove()
    assert seen["body"] == torch.bfloat16  # the body ran under autocast ...
    assert seen["head"] == {torch.float32} and seen["head_out"] == torch.float32  # ... the head did not
    assert keypoints.dtype == torch.float32 and keypoints.shape == expected.shape
    if name.startswith("regression"):  # random weights: coordinates within bfloat16's rounding of the body
        assert (keypoints[..., :2] - expected[..., :2]).abs().max() < 0.03 * 48
        assert (keypoints[..., 2] - expected[..., 2]).abs().max() < 0.03
    else:  # heatmap maxima of random weights are flat: compare the heatmaps instead
        with torch.no_grad():
            maps32 = branch(crops).heatmaps
            with torch.autocast("cpu", dtype=torch.bfloat16):
                maps16 = branch(crops).heatmaps
        assert maps16.dtype == torch.float32
        assert (maps16 - maps32).abs().max() <= 0.05 * maps32.abs().max()


def test_float32_inference_keeps_the_callers_autocast():
    branch = build_keypoint_branch(small_cfg("heatmap", (64, 48))).eval()
    linear = next(m for m in branch.body.modules() if isinstance(m, torch.nn.Linear))
    hooked = linear.register_forward_hook(lambda m, a, o: dtypes.append(o.dtype))
    dtypes = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        predict_crop_keypoints(branch, torch.randn(1, 3, 64, 48))
    hooked.remove()
    assert dtypes == [torch.bfloat16]


def test_channels_last_crops_give_the_same_keypoints():
    branch = build_keypoint_branch(small_cfg("heatmap", (64, 48))).eval()
    crops = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    formats = []
    conv = next(m for m in branch.body.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, a, o: formats.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        plain = predict_crop_keypoints(branch, crops, COCO_FLIP)
        channels_last = predict_crop_keypoints(branch, crops, COCO_FLIP, channels_last=True)
    assert formats == [False, True]
    torch.testing.assert_close(channels_last, plain, rtol=1e-4, atol=1e-3)


def test_bfloat16_keeps_reference_points_and_head_inputs_in_float32():
    torch.manual_seed(0)
    branch = build_keypoint_branch(variant_cfg("regression_iter_refine", (64, 48), dec_layers=3)).eval()
    crops = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        references32 = branch.body(crops, branch.head.predict_coords)["references"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            references16 = branch.body(crops, branch.head.predict_coords)["references"]
    assert references16.dtype == torch.float32
    # Layer 0's come from the query embeddings alone: bit-equal to float32's (bfloat16 would round
    # them by up to 2^-9 of the crop); the refined ones only differ through the bfloat16 body.
    assert torch.equal(references16[0], references32[0])
    assert (references16[1:] - references32[1:]).abs().max() < 0.05


def test_run_head_casts_only_under_bfloat16_and_keeps_other_entries():
    from depotr.modeling.keypoint_branches import KeypointBranch

    seen = {}

    def head(features):
        seen.update(features)
        return features["x"]

    x = torch.randn(2, 3).bfloat16()
    features = {"x": x, "pair": (x, x), "none": None}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = KeypointBranch._run_head(head, features, "cpu")
    assert out.dtype == torch.float32 and seen["none"] is None
    assert isinstance(seen["pair"], tuple) and all(t.dtype == torch.float32 for t in seen["pair"])
    with torch.autocast("cpu", dtype=torch.float16):
        assert KeypointBranch._run_head(head, {"x": x.half()}, "cpu").dtype == torch.float16
    assert KeypointBranch._run_head(head, {"x": x}, "cpu") is x  # no autocast: untouched
