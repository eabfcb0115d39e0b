"""The installed Detectron2 really works for what DePOTR uses (tools/install.sh route or an
official build from source)."""

import os

import pytest
import torch


@pytest.mark.parametrize(
    "config_path",
    ["COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml", "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"],
)
def test_model_zoo_configs_present(config_path):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    path = model_zoo.get_config_file(config_path)
    assert os.path.isfile(path)
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"


def test_roi_align_matches_hand_computed_values():
    from detectron2.layers import ROIAlign

    # Pixel (x, y) holds 10*y + x: a linear ramp, which bilinear sampling reproduces exactly.
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    image = (10 * ys + xs)[None, None]
    # aligned=True: continuous coordinates, pixel i covers [i, i+1), centre i + 0.5.
    box = torch.tensor([[0.0, 1.0, 2.0, 4.0, 4.0]])  # batch index, x0, y0, x1, y1
    crop = ROIAlign((2, 3), spatial_scale=1.0, sampling_ratio=1, aligned=True)(image, box)
    # 1-pixel bins: output cell (i, j) has its centre at x = 1 + j + 0.5, y = 2 + i + 0.5, where
    # the ramp's value is 10 * (2 + i) + (1 + j).
    expected = torch.tensor([[21.0, 22.0, 23.0], [31.0, 32.0, 33.0]])
    torch.testing.assert_close(crop[0, 0], expected)


def test_stand_in_or_real_c_extension_answers_version_queries():
    """collect_env_info reads the compiler and CUDA versions from detectron2._C (the real one
    or tools/install.sh's stand-in) and reports a broken one as "not built correctly"."""
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "not built correctly" not in info
    assert "Compiler" in info and "CUDA compiler" in info
