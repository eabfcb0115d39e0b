"""Left and right in the synthetic data follow rules that a horizontal flip keeps.

The flip augmentation (at crop time) mirrors the crop and swaps the left/right labels. A cue that marks one
side of the body by its looks (generator version 2 drew the left limbs lighter) then reads the
other way round on every flipped crop. These tests put rendered persons through the mapper and
the crop-time flip (the whole image as one mirrored crop), and check the rules the generator states:
* facing: a figure that faces the camera shows its left shoulder / hip on the image's right;
  a figure seen from behind, on the image's left;
* no side has its own shade: the left upper arm is the brighter one about as often as the
  right one.
"""

import cv2
import numpy as np
import pytest
import torch

from detectron2.structures import BoxMode

from depotr.data.dataset_mapper import DePOTRDatasetMapper
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, flip_indices, flip_pairs
from depotr.data.synthetic import render_synthetic_image
from depotr.data.synthetic_v4 import render_synthetic_image_v4
from depotr.modeling.crop_augmentation import CropAugmentation
from depotr.modeling.crops import crop_images, image_to_crop

IDX = {name: i for i, name in enumerate(COCO_PERSON_KEYPOINT_NAMES)}
# Images per generator version: v4's persons are more often cut or covered, so fewer show both
# upper arms (v = 2).
NUM_IMAGES = {3: 60, 4: 120}


@pytest.fixture(scope="module", params=[3, 4], ids=["v3", "v4"])
def dataset_dicts(tmp_path_factory, request):
    """Detectron2 dataset dicts (with each person's yaw / in-plane rotation) of images rendered
    by generator version 3 or 4."""
    render = {3: render_synthetic_image, 4: render_synthetic_image_v4}[request.param]
    root = tmp_path_factory.mktemp("left_right")
    dicts = []
    for i in range(NUM_IMAGES[request.param]):
        image, annos = render(seed=11, split_code=0, index=i)
        path = str(root / f"{i}.png")  # lossless: the test reads pixel shades
        cv2.imwrite(path, image)
        # COCO pixel-index keypoints -> Detectron2's continuous convention, as load_coco_json.
        for anno in annos:
            kp = np.asarray(anno["keypoints"], np.float64).reshape(-1, 3)
            kp[kp[:, 2] > 0, :2] += 0.5
            anno.update(keypoints=kp.ravel().tolist(), bbox_mode=BoxMode.XYWH_ABS, category_id=0)
        dicts.append(
            {"file_name": path, "image_id": i, "height": image.shape[0], "width": image.shape[1], "annotations": annos}
        )
    return dicts


def _mapped_persons(dicts, flip: bool):
    """(image (H, W, 3), keypoints (K, 3), yaw, rotation) of each person after the mapper and,
    with ``flip``, CropAugmentation's flip of a crop that is the whole image (one bilinear sample
    per pixel centre: the exact mirror image)."""
    mapper = DePOTRDatasetMapper(is_train=False)
    flip_order = flip_indices(COCO_PERSON_KEYPOINT_NAMES, flip_pairs())
    for d in dicts:
        out = mapper(d)
        image, keypoints = out["image"], out["instances"].gt_keypoints.tensor.double()
        # The mapper keeps every person with a valid box, in order.
        assert len(keypoints) == len(d["annotations"])
        if flip:
            height, width = image.shape[1:]
            augmentation = CropAugmentation(
                crop_size=(height, width), padding=1.0, flip_indices=flip_order, flip_prob=1
            )
            whole = torch.tensor([[0.0, 0.0, width, height]], dtype=torch.float64).expand(len(keypoints), 4)
            params, keypoints = augmentation(whole, keypoints)
            keypoints = image_to_crop(keypoints, params, (height, width))
            image = crop_images([image.double()], [params[:1]], (height, width), 1)[0].round().to(torch.uint8)
        for anno, kp in zip(d["annotations"], keypoints.numpy()):
            yield image.numpy().transpose(1, 2, 0), kp, anno["synthetic"]["yaw_deg"], anno["synthetic"]["rotation_deg"]


@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
@pytest.mark.parametrize("joint", ["shoulder", "hip"])
def test_left_right_follow_the_facing(dataset_dicts, flip, joint):
    checked = {"front": 0, "back": 0}
    for _, kp, yaw, rotation in _mapped_persons(dataset_dicts, flip):
        view = "front" if abs(yaw) <= 40 else "back" if 150 <= yaw % 360 <= 210 else None
        left, right = kp[IDX[f"left_{joint}"]], kp[IDX[f"right_{joint}"]]
        if view is None or abs(rotation) > 15 or left[2] == 0 or right[2] == 0:
            continue
        checked[view] += 1
        assert (left[0] > right[0]) == (view == "front"), (view, yaw, left, right)
    assert checked["front"] >= 10 and checked["back"] >= 1, checked


def _brightness(image: np.ndarray, xy: np.ndarray) -> float:
    x, y = (int(v) for v in np.floor(xy))  # continuous -> pixel index
    return float(image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].mean())


@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
def test_no_side_has_its_own_shade(dataset_dicts, flip):
    left_brighter = []
    for image, kp, _, _ in _mapped_persons(dataset_dicts, flip):
        arms = [(kp[IDX[f"{side}_shoulder"]], kp[IDX[f"{side}_elbow"]]) for side in ("left", "right")]
        if any(a[2] != 2 or b[2] != 2 for a, b in arms):
            continue
        left, right = (_brightness(image, (a[:2] + b[:2]) / 2) for a, b in arms)
        if abs(left - right) > 2:
            left_brighter.append(left > right)
    assert len(left_brighter) >= 30
    # A side-specific shade makes one side the brighter one on (nearly) every person.
    assert 0.25 <= np.mean(left_brighter) <= 0.75, (np.mean(left_brighter), len(left_brighter))
