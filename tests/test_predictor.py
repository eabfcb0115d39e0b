"""depotr.Predictor (the Python inference API) and depotr.data.image_io, on the instant config
with random weights and real photos from scikit-image (astronaut: colour, camera: grey)."""

import os
import re

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.structures import BoxMode

import depotr.modeling.meta_arch
from depotr import Predictor
from depotr.cli import ConfigError
from depotr.config import load_depotr_config
from depotr.data.image_io import read_image_bgr, to_bgr_uint8
from depotr.engine.detector import build_person_detector
from depotr.export import build_crop_keypoint_predictor
from depotr.modeling.crops import expand_boxes_to_aspect
from depotr.modeling.person_detector import PersonDetector, PoseWithDetector, resolve_model_zoo_path
from depotr.predictor import person_proposals
from tests.modeling.test_person_detector import DETECTOR_ZOO_CONFIG, _detector_cfg, fix_person_scores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
K = 17


def instant_cfg(*opts):
    # OKS-NMS off: a random model predicts near-identical poses for different boxes, and these
    # tests check that every box becomes a person (OKS-NMS itself: tests/modeling/test_oks_nms.py).
    return load_depotr_config(
        INSTANT_CONFIG, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "TEST.OKS_NMS_THRESH", 1.0, *opts]
    )


def astronaut_bgr(height: int = 128, width: int = 96) -> np.ndarray:
    """(H, W, 3) uint8 BGR photo."""
    return cv2.resize(skimage_data.astronaut()[:, :, ::-1], (width, height), interpolation=cv2.INTER_AREA)


def camera_grey(height: int = 128, width: int = 96) -> np.ndarray:
    """(H, W) uint8 grey photo."""
    return cv2.resize(skimage_data.camera(), (width, height), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(instant_cfg(), random_weights=True)


def assert_same_instances(a, b, atol=1e-5):
    assert a.image_size == b.image_size and len(a) == len(b)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=atol)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(a.pred_keypoints, b.pred_keypoints, rtol=1e-4, atol=atol)


# ---------------------------------------------------------------------------------------------
# Boxes: the caller's, the whole image


def test_caller_boxes_give_one_person_each_clipped(predictor):
    image = astronaut_bgr()
    boxes = np.array([[10.0, 20.0, 60.0, 110.0], [-5.0, 30.0, 40.0, 140.0]])  # the second crosses 2 borders
    inst = predictor(image, boxes=boxes)
    assert inst.image_size == (128, 96) and len(inst) == 2
    assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_keypoints", "pred_classes", "box_index"}
    assert inst.box_index.tolist() == [0, 1]
    clipped = torch.tensor([[10.0, 20.0, 60.0, 110.0], [0.0, 30.0, 40.0, 128.0]])
    torch.testing.assert_close(inst.pred_boxes.tensor, clipped)
    assert inst.pred_keypoints.shape == (2, K, 3) and inst.scores.shape == (2,)
    assert bool(torch.isfinite(inst.pred_keypoints).all() and torch.isfinite(inst.scores).all())
    assert inst.pred_keypoints.device.type == "cpu"
    # Image pixels: every keypoint lies in its person's crop (the clipped box grown to 3:4, x 1.25).
    crops = expand_boxes_to_aspect(clipped, (64, 48), 1.25)
    xy = inst.pred_keypoints[..., :2]
    assert bool(((xy >= crops[:, None, :2]) & (xy <= crops[:, None, 2:])).all())

    # Scores order the persons (stable); a tensor works like an array.
    reordered = predictor(image, boxes=torch.as_tensor(boxes), scores=[0.3, 0.9])
    torch.testing.assert_close(reordered.pred_boxes.tensor, inst.pred_boxes.tensor[[1, 0]])
    torch.testing.assert_close(reordered.pred_keypoints, inst.pred_keypoints[[1, 0]])
    assert reordered.box_index.tolist() == [1, 0]

    empty = predictor(image, boxes=np.zeros((0, 4)))
    assert len(empty) == 0 and empty.pred_keypoints.shape == (0, K, 3) and empty.image_size == (128, 96)
    assert predictor.predict_batch([]) == []


def test_box_outside_the_image_is_reported_and_the_others_keep_their_index(predictor, caplog):
    image = astronaut_bgr()  # 96 x 128
    boxes = [[200.0, 10.0, 260.0, 90.0], [10.0, 20.0, 60.0, 110.0], [0.0, 0.0, 1e30, 1e30]]
    with caplog.at_level("WARNING", logger="depotr.modeling.box_sources"):
        inst = predictor(image, boxes=boxes)
    assert inst.box_index.tolist() == [1, 2]
    torch.testing.assert_close(
        inst.pred_boxes.tensor, torch.tensor([[10.0, 20.0, 60.0, 110.0], [0.0, 0.0, 96.0, 128.0]])
    )
    # The huge box is cropped as the whole image: its keypoints stay in that crop.
    crop = expand_boxes_to_aspect(torch.tensor([[0.0, 0.0, 96.0, 128.0]]), (64, 48), 1.25)[0]
    xy = inst.pred_keypoints[1, :, :2]
    assert bool(((xy >= crop[:2]) & (xy <= crop[2:])).all())
    assert "dropped precomputed person boxes [[200.0, 10.0, 260.0, 90.0]] (indices [0])" in caplog.text


def test_messages_name_the_image_by_the_callers_image_id(predictor, caplog):
    """The friction: an array was always "image 0" (its index in a one-image batch), so the demo
    reported a box outside frame 7 of a video as outside "Image 0"."""
    image = astronaut_bgr()
    with caplog.at_level("WARNING", logger="depotr.modeling.box_sources"):
        predictor(image, boxes=[[200.0, 10.0, 260.0, 90.0]], image_id=7)
    assert "Image 7: dropped precomputed person boxes [[200.0, 10.0, 260.0, 90.0]]" in caplog.text
    with pytest.raises(ValueError, match=r"precomputed person box 0 of image 'walk/12' is degenerate"):
        predictor(image, boxes=[[20, 10, 5, 40]], image_id="walk/12")
    with pytest.raises(ValueError, match=r"image 'b': person boxes must be \(N, 4\)"):
        predictor.predict_batch([image, image], [None, np.zeros((2, 5))], image_ids=["a", "b"])
    with pytest.raises(ValueError, match=r"image 'b': unsupported image of shape \(8, 6, 2\)"):
        predictor.predict_batch([image, np.zeros((8, 6, 2), np.uint8)], image_ids=["a", "b"])
    with pytest.raises(ValueError, match="got 2 images and 1 image ids"):
        predictor.predict_batch([image, image], image_ids=["a"])


def test_whole_image_is_one_person_without_boxes_or_detector(predictor):
    inst = predictor(astronaut_bgr(120, 80))
    assert len(inst) == 1 and inst.image_size == (120, 80)
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 80.0, 120.0]]))
    assert inst.pred_keypoints.shape == (1, K, 3) and bool(torch.isfinite(inst.pred_keypoints).all())
    assert_same_instances(inst, predictor(astronaut_bgr(120, 80), boxes=[[0, 0, 80, 120]], scores=[1.0]))


def test_batch_equals_single_calls_with_one_crop_and_one_forward(predictor, monkeypatch):
    # Images of different sizes; image 0 is taken whole, the boxes of image 1 reach past its border.
    images = [astronaut_bgr(160, 120), astronaut_bgr(128, 96)[::-1].copy(), camera_grey(96, 112)]
    boxes = [None, [[20.0, 20.0, 60.0, 80.0], [60.0, 90.0, 100.0, 130.0]], [[30.0, 20.0, 70.0, 70.0]]]
    singles = [predictor(image, boxes=b) for image, b in zip(images, boxes)]

    crop_calls, forward_batches = [], []
    crop_images = depotr.modeling.meta_arch.crop_images

    def counted_crop_images(*args, **kwargs):
        crop_calls.append(1)
        return crop_images(*args, **kwargs)

    monkeypatch.setattr(depotr.modeling.meta_arch, "crop_images", counted_crop_images)
    branch = predictor.model.keypoint_branch
    hook = branch.register_forward_hook(lambda module, args, out: forward_batches.append(len(args[0])))
    try:
        batched = predictor.predict_batch(images, boxes=boxes)
    finally:
        hook.remove()
    # One forward of all 4 crops (with the flip test, of them and their mirror images together).
    assert len(crop_calls) == 1 and forward_batches == [(1 + 2 + 1) * (2 if predictor.cfg.TEST.FLIP else 1)]
    assert [len(b) for b in batched] == [1, 2, 1]
    for single, batch in zip(singles, batched):
        assert_same_instances(single, batch)


def test_path_input_equals_array_input(predictor, tmp_path):
    image = astronaut_bgr()
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), image)
    expected = predictor(image)
    assert_same_instances(predictor(str(path)), expected, atol=0)
    assert_same_instances(predictor(path), expected, atol=0)  # a pathlib.Path


def test_weights_are_loaded(predictor, tmp_path):
    DetectionCheckpointer(predictor.model, save_dir=str(tmp_path)).save("pose")
    image = astronaut_bgr()
    torch.manual_seed(1)
    fresh = Predictor(instant_cfg(), random_weights=True)  # another random initialisation
    pairs = zip(predictor.model.state_dict().values(), fresh.model.state_dict().values())
    assert any(not torch.equal(a, b) for a, b in pairs)
    torch.manual_seed(1)
    loaded = Predictor(instant_cfg("MODEL.WEIGHTS", str(tmp_path / "pose.pth")))
    for (name, a), b in zip(predictor.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), f"checkpoint not loaded: {name}"
    assert_same_instances(loaded(image), predictor(image), atol=0)


def test_empty_weights_need_random_weights_explicitly(tmp_path):
    """The friction: an empty MODEL.WEIGHTS ran on random weights with a warning only."""
    with pytest.raises(ConfigError, match=r"MODEL.WEIGHTS is empty: .* random_weights=True"):
        Predictor(instant_cfg())
    with pytest.raises(ConfigError, match="random weights, but MODEL.WEIGHTS is"):
        Predictor(instant_cfg("MODEL.WEIGHTS", str(tmp_path / "pose.pth")), random_weights=True)
    with pytest.raises(ConfigError, match=r"MODEL.WEIGHTS .*missing.pth: no such checkpoint file"):
        Predictor(instant_cfg("MODEL.WEIGHTS", str(tmp_path / "missing.pth")))


# ---------------------------------------------------------------------------------------------
# Image layouts


def _variants():
    bgr = astronaut_bgr()
    grey = camera_grey()
    grey_bgr = np.repeat(grey[:, :, None], 3, axis=2)
    alpha = np.full(bgr.shape[:2] + (1,), 17, dtype=np.uint8)
    return {
        "grey-2d": (grey, grey_bgr),
        "grey-1-channel": (grey[:, :, None], grey_bgr),
        "bgra": (np.concatenate([bgr, alpha], axis=2), bgr),
        "uint16": (bgr.astype(np.uint16) * 257, bgr),
        "uint16-grey": (grey.astype(np.uint16) * 257, grey_bgr),
        "float": (bgr / 255.0, bgr),
        "float32": ((bgr / 255.0).astype(np.float32), bgr),
        "non-contiguous": (bgr[:, ::-1][:, ::-1], bgr),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_to_bgr_uint8_converts_exactly(name):
    image, expected = _variants()[name]
    out = to_bgr_uint8(image)
    assert out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, expected)


def test_uint16_and_float_round_to_nearest():
    assert to_bgr_uint8(np.array([[[0, 128, 65535]]], dtype=np.uint16)).tolist() == [[[0, 0, 255]]]
    assert to_bgr_uint8(np.array([[[0, 129, 385]]], dtype=np.uint16)).tolist() == [[[0, 1, 1]]]
    assert to_bgr_uint8(np.array([[[0.0, 0.5, 1.0]]])).tolist() == [[[0, 128, 255]]]


@pytest.mark.parametrize("name", ["grey-2d", "bgra", "uint16", "float"])
def test_predictor_gives_same_result_for_converted_layouts(predictor, name):
    image, reference = _variants()[name]
    assert_same_instances(predictor(image), predictor(reference), atol=0)


@pytest.mark.parametrize("name", ["grey", "bgra", "uint16"])
def test_image_files_of_other_layouts(predictor, tmp_path, name):
    """Grey, BGRA and 16-bit PNG files are read at their depth and converted."""
    bgr, grey = astronaut_bgr(), camera_grey()
    stored, expected = {
        "grey": (grey, np.repeat(grey[:, :, None], 3, axis=2)),
        "bgra": (np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 9, np.uint8)], axis=2), bgr),
        "uint16": (bgr.astype(np.uint16) * 257, bgr),
    }[name]
    path = tmp_path / f"{name}.png"
    assert cv2.imwrite(str(path), stored)
    np.testing.assert_array_equal(read_image_bgr(path), expected)
    assert_same_instances(predictor(path), predictor(expected), atol=0)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_exif_orientation_is_applied(tmp_path, ext):
    """As Detectron2's read_image (and so the dataset mapper) applies it; OpenCV ignored a WebP's."""
    from PIL import Image

    image = Image.fromarray(astronaut_bgr(64, 48)[:, :, ::-1].copy())
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / f"rotated.{ext}", exif=exif.tobytes())
    assert read_image_bgr(tmp_path / f"rotated.{ext}").shape == (48, 64, 3)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((8,), np.uint8),
        np.zeros((8, 6, 2), np.uint8),
        np.zeros((8, 6, 5), np.uint8),
        np.zeros((2, 8, 6, 3), np.uint8),
        np.zeros((0, 6, 3), np.uint8),
        np.zeros((8, 6, 3), np.int32),
        np.zeros((8, 6, 3), bool),
        np.full((8, 6, 3), 2.0),
        np.full((8, 6, 3), np.nan),
    ],
    ids=["1d", "2-channels", "5-channels", "4d", "empty", "int32", "bool", "float>1", "nan"],
)
def test_invalid_images_raise_with_shape_and_dtype(image):
    with pytest.raises(ValueError, match=re.escape(f"shape {image.shape} and dtype {image.dtype}")):
        to_bgr_uint8(image)


def test_predictor_rejects_bad_images_naming_them(predictor, tmp_path):
    with pytest.raises(ValueError, match=r"image 1: unsupported image of shape \(8, 6, 2\)"):
        predictor.predict_batch([astronaut_bgr(), np.zeros((8, 6, 2), np.uint8)])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        predictor(tmp_path / "missing.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="corrupt.png"):
        predictor(str(tmp_path / "corrupt.png"))
    with pytest.raises(TypeError, match="numpy array or a file path"):
        predictor(torch.zeros((8, 6, 3), dtype=torch.uint8))


def test_predict_batch_refuses_one_image_for_a_batch(predictor, tmp_path):
    """The friction: predict_batch(image) read the rows of an (H, W, 3) image as H grey images
    of W x 3 pixels and returned H results; a path was read character by character."""
    image = astronaut_bgr(40, 30)
    with pytest.raises(TypeError, match=r"one image \(an array of shape \(40, 30, 3\)\): call the predictor"):
        predictor.predict_batch(image)
    with pytest.raises(TypeError, match=r"one image \('photo.jpg'\)"):
        predictor.predict_batch("photo.jpg")
    batch = np.stack([image, image[::-1]])  # (B, H, W, 3): still a batch of B images
    assert [x.image_size for x in predictor.predict_batch(batch)] == [(40, 30), (40, 30)]


def test_predict_batch_takes_iterables(predictor):
    """The friction: predict_batch(iter([image]), ...) raised "object of type 'list_iterator' has
    no len()"; images, boxes, scores and image ids may be any iterables, each read once."""
    images = [astronaut_bgr(), astronaut_bgr(96, 112)]
    boxes = [[[10.0, 20.0, 60.0, 110.0]], None]
    expected = predictor.predict_batch(images, boxes=boxes, scores=[[0.9], None])
    batched = predictor.predict_batch(
        iter(images), boxes=(b for b in boxes), scores=iter([[0.9], None]), image_ids=iter(["a", "b"])
    )
    assert len(batched) == 2
    for got, want in zip(batched, expected):
        assert_same_instances(got, want)
    with pytest.raises(ValueError, match="got 2 images and 1 image ids"):
        predictor.predict_batch(iter(images), image_ids=iter(["a"]))


def test_truncated_jpeg_and_folder_are_not_read_as_images(tmp_path):
    assert cv2.imwrite(str(tmp_path / "whole.jpg"), astronaut_bgr())
    jpeg = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 3 // 4])
    assert cv2.imread(str(tmp_path / "cut.jpg")) is not None  # OpenCV decodes a part, grey below
    with pytest.raises(ValueError, match=r"JPEG file .*cut\.jpg' is truncated"):
        read_image_bgr(tmp_path / "cut.jpg")
    np.testing.assert_array_equal(read_image_bgr(tmp_path / "whole.jpg"), cv2.imread(str(tmp_path / "whole.jpg")))
    with pytest.raises(IsADirectoryError, match="is a folder, not an image file"):
        read_image_bgr(tmp_path)


def test_predictor_rejects_bad_boxes(predictor):
    image = astronaut_bgr()
    with pytest.raises(ValueError, match=r"image 0: person boxes must be \(N, 4\) XYXY_ABS, got shape \(2, 5\)"):
        predictor(image, boxes=np.zeros((2, 5)))
    # One check (box_sources.check_boxes) decides, in the words of the finiteness check below.
    scores_shape = r"^image 0: box scores must be \(1,\) for 1 boxes, got shape \(2,\) \(precomputed boxes\)$"
    with pytest.raises(ValueError, match=scores_shape):
        predictor(image, boxes=[[0, 0, 10, 10]], scores=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"precomputed person box 1 of image 0 is degenerate"):
        predictor(image, boxes=[[0, 0, 10, 10], [20, 10, 5, 40]])
    with pytest.raises(ValueError, match=r"image 0: box scores must be finite; box 1 has score nan"):
        predictor(image, boxes=[[0, 0, 10, 10], [5, 5, 20, 20]], scores=[0.5, float("nan")])
    with pytest.raises(ValueError, match="got 2 images, 1 box entries"):
        predictor.predict_batch([image, image], boxes=[None])
    with pytest.raises(ValueError, match="has scores but no boxes"):
        predictor(image, scores=[1.0])


@pytest.mark.parametrize("row", [torch.tensor, np.array, list], ids=["tensor", "array", "list"])
def test_person_boxes_as_a_list_of_rows(row):
    """A list of per-box rows (a detector's boxes one by one); before, tensor rows raised "only one
    element tensors can be converted to Python scalars"."""
    proposals = person_proposals([row([10.0, 20.0, 60.0, 100.0]), row([5, 6, 7, 8])], None, (120, 90))
    assert proposals.proposal_boxes.tensor.tolist() == [[10, 20, 60, 100], [5, 6, 7, 8]]
    assert proposals.proposal_boxes.tensor.dtype == torch.float32
    with pytest.raises(ValueError, match="expected sequence of length 4 at dim 1 \\(got 3\\)"):
        person_proposals([row([10.0, 20.0, 60.0, 100.0]), row([5, 6, 7])], None, (120, 90))


def test_xywh_boxes_with_their_box_mode_equal_the_xyxy_boxes(predictor):
    image = astronaut_bgr()
    xywh = np.array([[10.0, 20.0, 40.0, 90.0], [50.0, 5.0, 30.0, 60.0]])
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # by hand
    expected = predictor(image, boxes=xyxy)
    assert_same_instances(predictor(image, boxes=xywh, box_mode=BoxMode.XYWH_ABS), expected)
    assert_same_instances(
        predictor.predict_batch([image], [torch.tensor(xywh)], box_mode=BoxMode.XYWH_ABS)[0], expected
    )
    # The friction: XYWH boxes read as XYXY; the second (x1 = 30 < x0 = 50) is degenerate and the
    # error names the likely mistake.
    with pytest.raises(
        ValueError, match=r"person box 1 of image 0 is degenerate.*if it is XYWH, pass box_mode=BoxMode.XYWH_ABS"
    ):
        predictor(image, boxes=xywh)
    # A zero-width XYWH box given with its box mode: the error showed the converted XYXY box and
    # advised passing box_mode=BoxMode.XYWH_ABS; now the box as given, in its mode, and no advice.
    with pytest.raises(ValueError) as error:
        predictor(image, boxes=[[10, 20, 30, 40], [10, 20, 0, 80]], box_mode=BoxMode.XYWH_ABS, image_id="f")
    assert str(error.value) == (
        "precomputed person box 1 of image 'f' is degenerate: [10.0, 20.0, 0.0, 80.0] (XYWH; width and height "
        "must be finite and > 0); 1 of 2 boxes of this image are degenerate"
    )
    with pytest.raises(ValueError, match=r"^image 0: box scores must be finite; box 0 has score inf"):
        predictor(image, boxes=xywh, scores=[float("inf"), 1.0], box_mode=BoxMode.XYWH_ABS)
    with pytest.raises(ValueError, match="box_mode must be BoxMode.XYXY_ABS or BoxMode.XYWH_ABS"):
        predictor(image, boxes=xyxy / 96, box_mode=BoxMode.XYXY_REL)


def test_normalised_boxes_are_warned_about_naming_the_image(predictor, caplog):
    # before: the warning did not say which image (a video frame, a file of a batch) had the boxes
    image = astronaut_bgr()  # 128 x 96
    with caplog.at_level("WARNING", logger="depotr"):
        predictor(image, boxes=[[0.1, 0.2, 0.6, 0.9]], image_id=7)
    assert (
        "image 7: all 1 person boxes have coordinates <= 1.5 on a 96x128 image: are they normalised to [0, 1]?"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="depotr"):
        predictor.predict_batch([image, image], boxes=[[[10, 20, 60, 90]], [[0.1, 0.2, 0.6, 0.9]]])
    assert "image 1: all 1 person boxes" in caplog.text and "image 0" not in caplog.text  # by its batch index
    caplog.clear()
    with caplog.at_level("WARNING", logger="depotr"):
        predictor(image, boxes=[[0.1, 0.2, 10.0, 20.0]])  # pixels
        predictor(image[:32, :24], boxes=[[0.1, 0.2, 1.0, 1.5]])  # a tiny image: 1.5 px is plausible
    assert "normalised" not in caplog.text


# ---------------------------------------------------------------------------------------------
# Detector boxes


def test_detector_boxes_and_no_person(tmp_path):
    cfg = instant_cfg()
    cfg.MODEL.DEPOTR.DETECTOR = _detector_cfg(tmp_path, weights="").MODEL.DEPOTR.DETECTOR  # random init
    torch.manual_seed(0)
    predictor = Predictor(cfg, random_weights=True)
    detector = predictor.detector  # beside the pose model, not in it
    assert isinstance(detector, PersonDetector)
    assert not any(isinstance(m, PersonDetector) for m in predictor.model.modules())
    fix_person_scores(detector)  # every box scores sigmoid(1) = 0.731
    detector.detector.roi_heads.box_predictor.test_topk_per_image = 5  # few persons: a fast test

    images = [astronaut_bgr(128, 96), camera_grey(96, 128)]
    caller_boxes = [[10.0, 10.0, 60.0, 90.0]]
    with_detector, with_caller = predictor.predict_batch(images, boxes=[None, caller_boxes])
    model_input = predictor._model_input(images[0], 0)
    (expected,) = detector([model_input], predictor.input_format)
    expected_boxes, expected_scores = expected.proposal_boxes.tensor, expected.scores
    # How many boxes a random detector keeps depends on its random RPN (1-5 here, topk 5).
    assert 1 <= len(with_detector) == len(expected_boxes) <= 5
    torch.testing.assert_close(with_detector.pred_boxes.tensor, expected_boxes)
    torch.testing.assert_close(expected_scores, torch.sigmoid(torch.ones_like(expected_scores)))
    assert with_detector.pred_keypoints.shape == (len(expected_boxes), K, 3)
    assert bool(torch.isfinite(with_detector.pred_keypoints).all())
    torch.testing.assert_close(with_caller.pred_boxes.tensor, torch.tensor(caller_boxes))  # the caller's win

    detector.score_thresh = 0.75  # above sigmoid(1): the detector finds nobody
    nobody = predictor.predict_batch(images)
    assert [len(x) for x in nobody] == [0, 0]
    assert [x.image_size for x in nobody] == [(128, 96), (96, 128)]
    assert nobody[0].pred_keypoints.shape == (0, K, 3) and nobody[0].scores.shape == (0,)


def test_empty_detector_weights_need_random_weights_explicitly(tmp_path):
    """The friction: with MODEL.DEPOTR.DETECTOR.WEIGHTS empty the Predictor (and the demo) ran a
    random person detector, a warning only; random_weights=True asks for it."""
    pose = tmp_path / "pose.pth"
    pose.write_bytes(b"")  # the detector is checked before the pose model loads this
    cfg = instant_cfg("MODEL.WEIGHTS", str(pose))
    cfg.MODEL.DEPOTR.DETECTOR = _detector_cfg(tmp_path, weights="").MODEL.DEPOTR.DETECTOR
    with pytest.raises(ConfigError, match=r"MODEL.DEPOTR.DETECTOR.WEIGHTS is empty: .*random_weights=True"):
        Predictor(cfg)


@pytest.mark.parametrize("build", [Predictor, build_crop_keypoint_predictor], ids=["predictor", "export"])
def test_a_detector_config_as_the_pose_config_is_refused(build):
    """The friction: a Detectron2 detector's config given as the pose model's (--config-file) built
    a GeneralizedRCNN: the Predictor (and the demo) failed with a TypeError about 'box_source', the
    export on a missing attribute, or it blamed the pose checkpoint for not fitting the detector."""
    cfg = load_depotr_config(resolve_model_zoo_path(DETECTOR_ZOO_CONFIG), ["MODEL.DEVICE", "cpu"])
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(ConfigError, match=r"META_ARCHITECTURE is 'GeneralizedRCNN', not DePOTR's pose model"):
        build(cfg, random_weights=True)
    cfg.MODEL.META_ARCHITECTURE = "NoSuchModel"
    with pytest.raises(ConfigError, match=r"META_ARCHITECTURE 'NoSuchModel': No object named 'NoSuchModel'"):
        build(cfg, random_weights=True)


def test_predictor_and_model_give_the_same_detector_boxes(tmp_path):
    """One box policy: the Predictor's detector boxes are those of the evaluation's composition
    (``Trainer.test`` with TEST_BOX_SOURCE "detector": PoseWithDetector over the model built
    from the same config, with the same saved random detector)."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = instant_cfg()
    cfg.MODEL.DEPOTR.DETECTOR = _detector_cfg(tmp_path, weights="").MODEL.DEPOTR.DETECTOR
    saved = Predictor(cfg, random_weights=True).detector
    fix_person_scores(saved)  # every box scores sigmoid(1)
    DetectionCheckpointer(saved.detector, save_dir=str(tmp_path)).save("detector")
    cfg.MODEL.DEPOTR.DETECTOR.WEIGHTS = str(tmp_path / "detector.pth")
    cfg.MODEL.DEPOTR.BOX_TOPK = 3
    predictor = Predictor(cfg, random_weights=True)
    cfg.MODEL.DEPOTR.TEST_BOX_SOURCE = "detector"
    model = PoseWithDetector(build_person_detector(cfg), build_model(cfg), cfg.INPUT.FORMAT).eval()
    image = astronaut_bgr(128, 96)
    inst = predictor(image)
    with torch.no_grad():
        expected = model([predictor._model_input(image, 0)])[0]["instances"]
    assert 1 <= len(inst) <= 3
    torch.testing.assert_close(inst.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert inst.box_index.tolist() == expected.box_index.tolist()  # (the pose models' weights differ)
