"""DePOTRDatasetMapper and its photometric augmentation: output format, errors, pixels-only."""

import cv2
import numpy as np
import pytest
import torch

from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.structures import BoxMode, Instances

from depotr.data.dataset_mapper import DePOTRDatasetMapper, build_photometric_augmentation
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES
from depotr.engine.compat import _RetryMapDataset, map_dataset

K = len(COCO_PERSON_KEYPOINT_NAMES)
H, W = 96, 128  # non-square, to catch x/y mix-ups


def _keypoints(points):
    """(K, 3) with the given {index: (x, y, v)} and the rest unlabelled."""
    kp = np.zeros((K, 3))
    for i, (x, y, v) in points.items():
        kp[i] = (x, y, v)
    return kp


def _dict(tmp_path, image=None, annotations=(), name="img.png", **extra):
    if image is None:
        image = np.full((H, W, 3), 90, np.uint8)
    path = tmp_path / name
    cv2.imwrite(str(path), image)
    return {
        "file_name": str(path),
        "image_id": 5,
        "height": image.shape[0],
        "width": image.shape[1],
        "annotations": list(annotations),
        **extra,
    }


def _anno(kp, bbox=(10.0, 12.0, 60.0, 70.0), ann_id=42):
    return {
        "id": ann_id,
        "bbox": list(bbox),
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "keypoints": np.asarray(kp, np.float64).reshape(-1).tolist(),
    }


def test_eval_output_format(tmp_path):
    kp = _keypoints({0: (30.5, 40.5, 2), 5: (20.5, 50.5, 1), 6: (0.5, 0.5, 0)})
    d = _dict(
        tmp_path,
        annotations=[_anno(kp), {**_anno(kp, ann_id=43), "iscrowd": 1}],
        person_boxes=np.array([[1, 2, 50, 60], [3, 4, 20, 30]], np.float32),
        person_scores=np.array([0.9, 0.4], np.float32),
    )
    out = DePOTRDatasetMapper(is_train=False)(d)
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, H, W)
    assert (out["height"], out["width"], out["image_id"], out["file_name"]) == (H, W, 5, d["file_name"])
    inst = out["instances"]
    assert isinstance(inst, Instances) and len(inst) == 1  # crowd dropped
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[10, 12, 70, 82]])
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [0]
    got = inst.gt_keypoints.tensor.numpy()
    assert got.shape == (1, K, 3)
    expected = kp.copy()
    expected[6] = 0  # v = 0 -> x = y = 0
    np.testing.assert_allclose(got[0], expected)  # Detectron2 dict coordinates kept as they are
    props = out["proposals"]
    np.testing.assert_allclose(props.proposal_boxes.tensor.numpy(), d["person_boxes"])
    np.testing.assert_allclose(props.scores.numpy(), [0.9, 0.4])


def test_unlabelled_keypoints_are_zeroed(tmp_path):
    kp = _keypoints({0: (30.5, 40.5, 2)})
    kp[3] = (0.5, 0.5, 0)  # what load_coco_json makes of an unlabelled (0, 0, 0)
    out = DePOTRDatasetMapper(is_train=False)(_dict(tmp_path, annotations=[_anno(kp)]))
    assert out["instances"].gt_keypoints.tensor[0, 3].tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt, channel", [("BGR", 0), ("RGB", 2)], ids=["BGR", "RGB"])
def test_image_format(tmp_path, fmt, channel):
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 200  # blue in the BGR file
    out = DePOTRDatasetMapper(is_train=False, image_format=fmt)(_dict(tmp_path, img))
    assert out["image"][channel].float().mean() == 200


_GREY16 = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)


@pytest.mark.parametrize(
    "image",
    [_GREY16, np.dstack([_GREY16, _GREY16[::-1], 65535 - _GREY16]), (_GREY16 // 257).astype(np.uint8)],
    ids=["grey16", "colour16", "grey8"],
)
@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_16_bit_and_grey_pngs_read_as_the_predictor_reads_them(tmp_path, image, fmt):
    """A 16-bit PNG is scaled to 8 bits (Detectron2's read_image saturated a grey one to white),
    grey is repeated: the same pixels as the Predictor's read_image_bgr, in INPUT.FORMAT's order."""
    out = DePOTRDatasetMapper(is_train=False, image_format=fmt)(_dict(tmp_path, image))
    bgr = image if image.ndim == 3 else np.repeat(image[..., None], 3, 2)
    bgr = ((bgr.astype(np.int64) + 128) // 257).astype(np.uint8) if image.dtype == np.uint16 else bgr
    expected = bgr if fmt == "BGR" else bgr[..., ::-1]
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("ext", ["gif", "tif"])
def test_files_opencv_cannot_decode_are_read_by_pil(tmp_path, ext):
    """A GIF, and a TIFF with an EXIF orientation tag (OpenCV 4.11 fails on it), are read as
    Detectron2's read_image reads them."""
    from PIL import Image

    from detectron2.data.detection_utils import read_image

    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:20, :30] = (255, 0, 0)
    rgb[50:, 60:] = (0, 0, 255)
    path = tmp_path / f"img.{ext}"
    exif = Image.Image().getexif()
    exif[0x0112] = 6  # an orientation tag (which PIL does not apply to a TIFF)
    Image.fromarray(rgb).save(path, exif=exif)
    d = {"file_name": str(path), "image_id": 1, "height": H, "width": W}
    out = DePOTRDatasetMapper(is_train=False, image_format="RGB")(d)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), read_image(str(path), format="RGB"))


def test_empty_annotations(tmp_path):
    out = DePOTRDatasetMapper(is_train=True, augmentation=build_photometric_augmentation())(_dict(tmp_path))
    assert len(out["instances"]) == 0 and out["instances"].gt_keypoints.tensor.shape == (0, K, 3)


def test_photometric_augmentation_changes_pixels_only_and_follows_numpy_seed(tmp_path):
    """All three transforms on: the image changes, size, boxes, keypoints and proposals do not;
    the same NumPy seed (set per iteration / worker by the trainer) gives the same image."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W, 3)).astype(np.uint8)
    kp = _keypoints({0: (30.5, 40.5, 2), 5: (20.5, 50.5, 1)})
    record = _dict(tmp_path, image, [_anno(kp)], person_boxes=[[1.0, 2.0, 50.0, 60.0]], person_scores=[0.9])
    train = DePOTRDatasetMapper(is_train=True, augmentation=build_photometric_augmentation(1.0, 1.0, 1.0))
    plain = DePOTRDatasetMapper(is_train=False)(record)
    np.random.seed(5)
    out = train(record)
    assert out["image"].shape == plain["image"].shape and not torch.equal(out["image"], plain["image"])
    assert torch.equal(out["instances"].gt_keypoints.tensor, plain["instances"].gt_keypoints.tensor)
    assert torch.equal(out["instances"].gt_boxes.tensor, plain["instances"].gt_boxes.tensor)
    assert torch.equal(out["proposals"].proposal_boxes.tensor, plain["proposals"].proposal_boxes.tensor)
    np.random.seed(5)
    assert torch.equal(train(record)["image"], out["image"])
    assert not torch.equal(train(record)["image"], out["image"])


def _write_corrupt(path, kind):
    if kind == "garbage":
        path.write_bytes(b"this is not an image" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_jpeg":
        ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (H, W, 3)).astype(np.uint8))
        path.write_bytes(buf.tobytes()[:200])


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated_jpeg", "missing"])
def test_corrupt_image_skipped_in_training_and_raises_in_eval(tmp_path, kind, caplog):
    d = _dict(tmp_path, annotations=[_anno(_keypoints({0: (5.5, 5.5, 2)}))])
    bad = tmp_path / "broken.jpg"
    if kind != "missing":
        _write_corrupt(bad, kind)
    d["file_name"] = str(bad)
    train = DePOTRDatasetMapper(is_train=True, augmentation=build_photometric_augmentation())
    with caplog.at_level("WARNING", logger="depotr.data.dataset_mapper"):
        assert train(d) is None
        assert train(d) is None
    assert train.num_skipped_images == 2
    assert "broken.jpg" in caplog.text and "2 skipped so far" in caplog.text
    with pytest.raises(OSError, match="broken.jpg"):
        DePOTRDatasetMapper(is_train=False)(d)


def _good_and_bad(tmp_path):
    good = _dict(tmp_path, annotations=[_anno(_keypoints({0: (5.5, 5.5, 2)}))])
    return good, dict(good, file_name=str(tmp_path / "missing.jpg"))


def test_map_dataset_skips_unreadable_images(tmp_path):
    good, bad = _good_and_bad(tmp_path)
    mapper = DePOTRDatasetMapper(is_train=True)
    dataset = map_dataset(DatasetFromList([bad, bad, good], copy=False), mapper)
    assert isinstance(dataset, MapDataset) and len(dataset) == 3
    for i in range(3):
        assert dataset[i]["file_name"] == good["file_name"]
    assert mapper.num_skipped_images >= 2


def test_map_dataset_uses_detectron2s_own_where_its_retry_works(tmp_path):
    """The feature test agrees with Detectron2's MapDataset on an unreadable image: v0.6 retries
    with random.sample(set), a TypeError since Python 3.11; main's retry works."""
    good, bad = _good_and_bad(tmp_path)
    plain = MapDataset(DatasetFromList([bad, good], copy=False), DePOTRDatasetMapper(is_train=True))
    try:
        retry_works = plain[0]["file_name"] == good["file_name"]
    except TypeError as e:
        assert "Population must be a sequence" in str(e)
        retry_works = False
    dataset = map_dataset(DatasetFromList([bad, good], copy=False), DePOTRDatasetMapper(is_train=True))
    assert (type(dataset) is MapDataset) == retry_works


def test_v06_retry_map_dataset_skips_and_raises_when_every_image_fails(tmp_path):
    good, bad = _good_and_bad(tmp_path)
    dataset = _RetryMapDataset(DatasetFromList([bad, good], copy=False), DePOTRDatasetMapper(is_train=True))
    assert dataset[0]["file_name"] == good["file_name"]
    all_bad = _RetryMapDataset(DatasetFromList([bad, bad], copy=False), DePOTRDatasetMapper(is_train=True))
    with pytest.raises(RuntimeError, match="returned None for every element"):
        all_bad[0]


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(())


def test_map_dataset_rejects_iterable_datasets():
    with pytest.raises(TypeError, match="map-style"):
        map_dataset(_Stream(), lambda d: d)


@pytest.mark.parametrize(
    "keypoints, match",
    [
        ([1.0, 2.0, 2] * (K - 1), r"expected 51 values .* got 48"),
        ([1.0, 2.0, 2] * K + [1.0], r"expected 51 values .* got 52"),
        ([float("nan"), 2.0, 2] + [0.0, 0.0, 0] * (K - 1), "NaN or inf"),
        ([float("inf"), 2.0, 2] + [0.0, 0.0, 0] * (K - 1), "NaN or inf"),
        ([1.0, 2.0, 3] + [0.0, 0.0, 0] * (K - 1), "visibility must be 0, 1 or 2"),
        ([[1, 2]] * K, r"expected 51 values"),
    ],
    ids=["too_short", "too_long", "nan", "inf", "bad_visibility", "wrong_shape"],
)
@pytest.mark.parametrize("is_train", [True, False], ids=["train", "eval"])
def test_malformed_keypoints_name_the_annotation(tmp_path, keypoints, match, is_train):
    anno = _anno(np.zeros((K, 3)), ann_id=1234)
    anno["keypoints"] = keypoints
    with pytest.raises(ValueError, match=match) as info:
        DePOTRDatasetMapper(is_train=is_train)(_dict(tmp_path, annotations=[anno]))
    assert "annotation id 1234" in str(info.value) and "img.png" in str(info.value)


@pytest.mark.parametrize(
    "bbox", [(10, 10, 0, 5), (10, 10, 5, -1), (10, float("nan"), 5, 5)], ids=["zero_width", "negative_height", "nan"]
)
def test_degenerate_box_names_the_annotation(tmp_path, bbox):
    anno = _anno(np.zeros((K, 3)), bbox=bbox, ann_id=77)
    with pytest.raises(ValueError, match="degenerate box .* annotation id 77"):
        DePOTRDatasetMapper(is_train=False)(_dict(tmp_path, annotations=[anno]))


def test_from_config_and_synthetic_dicts(small_synthetic):
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config
    from depotr.data.datasets import _load_synthetic_split

    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.DATASETS.TRAIN = ("synthetic_persons_train",)
    cfg.INPUT.AUG.BLUR_PROB = 1.0
    train, test = DePOTRDatasetMapper(cfg, is_train=True), DePOTRDatasetMapper(cfg, is_train=False)
    assert [type(t).__name__ for t in train.augmentation] == ["GaussianBlur", "RGBShift", "RandomBrightnessContrast"]
    assert [t.p for t in train.augmentation] == [1.0, 0.2, 0.3] and test.augmentation is None
    cfg.INPUT.AUG.ENABLED = False
    assert DePOTRDatasetMapper(cfg, is_train=True).augmentation is None
    root, _, _ = small_synthetic
    dicts = _load_synthetic_split("synthetic_persons_train", root, "train", 12, 7, 256)
    for d in dicts[:4]:
        for mapper in (train, test):
            inst = mapper(d)["instances"]
            kp = inst.gt_keypoints.tensor
            assert len(inst) == len(d["annotations"])
            v0 = kp[..., 2] == 0
            assert (kp[v0][:, :2] == 0).all()
            lab = kp[~v0]
            assert (lab[:, 0] >= 0).all() and (lab[:, 0] <= 256).all() and (lab[:, 1] <= 256).all()
            boxes = inst.gt_boxes.tensor
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
