"""depotr.tracking: matching of persons across frames (crossing persons, lost and re-found
tracks), the One-Euro filter against a hand computation, smoothing per track, and the API on a
real (random-weights) Predictor."""

import logging
import math
import os

import numpy as np
import pytest
import torch

from detectron2.structures import Boxes, BoxMode, Instances

from depotr import Predictor
from depotr.cli import ConfigError
from depotr.config import load_depotr_config
from depotr.data.keypoint_metadata import COCO_PERSON_OKS_SIGMAS
from depotr.tracking import OneEuroFilter, PoseTracker, VideoPoseTracker, track_video, tracking_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
K = 17
RNG = np.random.default_rng(0)
# Two pose templates in a unit box (x, y in [0, 1]): arms raised above the head / arms down.
ARMS_UP = RNG.uniform(0.2, 0.8, (K, 2))
ARMS_DOWN = ARMS_UP.copy()
ARMS_DOWN[7:11, 1] += 0.5  # elbows and wrists far lower (COCO indices 7-10)
ARMS_UP[7:11, 1] -= 0.15


def person(x0: float, y0: float, template: np.ndarray, w: float = 40.0, h: float = 100.0):
    """(box (4,), keypoints (K, 3)) of a person whose box's top-left corner is (x0, y0)."""
    xy = np.array([x0, y0]) + template * np.array([w, h])
    return np.array([x0, y0, x0 + w, y0 + h]), np.concatenate([xy, np.ones((K, 1))], 1)


def frame(*persons) -> Instances:
    out = Instances((480, 640))
    out.pred_boxes = Boxes(torch.tensor(np.array([p[0] for p in persons]).reshape(-1, 4), dtype=torch.float32))
    out.pred_keypoints = torch.tensor(np.array([p[1] for p in persons]).reshape(-1, K, 3), dtype=torch.float32)
    out.scores = torch.ones(len(persons))
    return out


def crossing_ids(tracker: PoseTracker):
    """Track ids of persons A and B in 21 frames: A walks right, B walks left, the boxes
    overlap wholly at frame 10; A raises its arms, B does not."""
    ids_a, ids_b = [], []
    for t in range(21):
        a = person(100 + 8 * t, 100, ARMS_UP)
        b = person(260 - 8 * t, 100, ARMS_DOWN)
        flip = t % 2 == 1  # the detector's order changes from frame to frame
        ids = tracker.update(frame(*([b, a] if flip else [a, b]))).track_id.tolist()
        ids_a.append(ids[1] if flip else ids[0])
        ids_b.append(ids[0] if flip else ids[1])
    return ids_a, ids_b


def test_crossing_persons_keep_their_ids():
    ids_a, ids_b = crossing_ids(PoseTracker(COCO_PERSON_OKS_SIGMAS))
    assert set(ids_a) == {0} and set(ids_b) == {1}


def test_box_iou_alone_swaps_the_crossing_persons_that_oks_tells_apart():
    """The same crossing with IoU only and no motion model: at the full overlap both tracks fit
    both persons equally, which is why OKS is part of the similarity (the motion model, too,
    tells them apart)."""
    ids_a, ids_b = crossing_ids(PoseTracker(COCO_PERSON_OKS_SIGMAS, iou_weight=1.0, velocity_gain=0.0))
    assert set(ids_a) != {0} or set(ids_b) != {1}
    ids_a, ids_b = crossing_ids(PoseTracker(COCO_PERSON_OKS_SIGMAS, iou_weight=1.0))
    assert set(ids_a) == {0} and set(ids_b) == {1}


def test_motion_tells_apart_crossing_persons_with_the_same_box_and_pose():
    """Two persons of one size and one pose cross (A right, B left, 4 px/frame), 2 px apart at
    frame 10; at frame 11 B's box is missed. A's box is then nearer B's last box than its own, but
    where A's track is heading: the static similarity gives it B's id, the motion model A's."""

    def ids(gain: float):
        tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, velocity_gain=gain)
        ids_a, ids_b = [], []
        for t in range(21):
            a, b = person(60 + 4 * t, 100, ARMS_UP), person(142 - 4 * t, 100, ARMS_UP)
            out = tracker.update(frame(a) if t == 11 else frame(a, b)).track_id.tolist()
            ids_a.append(out[0])
            ids_b += out[1:]
        return ids_a, ids_b

    assert ids(0.1) == ([0] * 21, [1] * 20)
    no_motion_a, no_motion_b = ids(0.0)
    assert no_motion_a[11:] == [1] * 10 and no_motion_b[11:] == [0] * 9  # swapped at the miss


@pytest.mark.parametrize("gap, same_id", [(3, True), (4, False)])
def test_a_lost_track_is_refound_within_max_lost_frames_and_ended_beyond(gap, same_id):
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, max_lost_frames=3)
    other = person(400, 100, ARMS_DOWN)  # always seen
    for t in range(5):
        out = tracker.update(frame(person(100 + 2 * t, 100, ARMS_UP), other))
    assert out.track_id.tolist() == [0, 1]
    for _ in range(gap):  # the first person is missed
        assert tracker.update(frame(other)).track_id.tolist() == [1]
    out = tracker.update(frame(person(110, 100, ARMS_UP), other))
    assert out.track_id.tolist() == ([0, 1] if same_id else [2, 1])  # a new id, never a reused one
    assert out.pred_keypoints.shape == (2, K, 3)


@pytest.mark.parametrize("skipped, same_id", [(3, True), (4, False)])
def test_skipped_frames_age_the_tracks(skipped, same_id):
    """A frame the caller skips (e.g. one of another size) still counts toward MAX_LOST_FRAMES."""
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, max_lost_frames=3)
    assert tracker.update(frame(person(100, 100, ARMS_UP))).track_id.tolist() == [0]
    for _ in range(skipped):
        tracker.skip_frame()
    assert tracker.update(frame(person(100, 100, ARMS_UP))).track_id.tolist() == ([0] if same_id else [1])


def test_a_missing_keypoint_neither_breaks_the_tracks_nor_the_smoothing():
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, smoothing=(1.0, 0.2, 1.0))
    a, b = person(100, 100, ARMS_UP), person(300, 100, ARMS_DOWN)
    tracker.update(frame(a, b))
    missing = (a[0], a[1].copy())
    missing[1][0, :2] = np.nan  # the nose of A not given
    out = tracker.update(frame(b, missing))
    assert out.track_id.tolist() == [1, 0]
    assert np.isnan(out.pred_keypoints[1, 0, :2].numpy()).all() and torch.isfinite(out.pred_keypoints[1, 1:]).all()
    out = tracker.update(frame(a, b))
    assert out.track_id.tolist() == [0, 1] and torch.isfinite(out.pred_keypoints).all()
    torch.testing.assert_close(out.pred_keypoints[0, 0, :2], torch.tensor(a[1][0, :2], dtype=torch.float32))


def test_one_euro_filter_keeps_the_state_of_a_missing_element():
    f, g = OneEuroFilter(1.0, 0.1, 1.0), OneEuroFilter(1.0, 0.1, 1.0)
    f(np.array([0.0, 0.0]), 0.1)
    g(np.array([0.0]), 0.1)
    out = f(np.array([1.0, np.nan]), 0.1)
    np.testing.assert_allclose(out[0], g(np.array([1.0]), 0.1)[0])  # the other element as if alone
    assert np.isnan(out[1]) and f.value[1] == 0.0 and f.speed[1] == 0.0  # its own state untouched
    h = OneEuroFilter(1.0, 0.1, 1.0)
    h(np.array([np.nan]), 0.1)
    np.testing.assert_allclose(h(np.array([4.0]), 0.1), [4.0])  # first seen: starts at its value


def test_unmatched_persons_below_min_similarity_start_new_tracks():
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, min_similarity=0.3)
    tracker.update(frame(person(100, 100, ARMS_UP)))
    assert tracker.update(frame(person(400, 300, ARMS_UP))).track_id.tolist() == [1]  # far away: new person
    assert tracker.update(frame()).track_id.tolist() == []


def leaving_ids(tracker: PoseTracker, part_x0: float) -> list:
    """Ids of a person walking right (8 px/frame) to the right edge of the 640-wide frame: whole
    for 5 frames, then cut by the edge, then only an arm in view (a 10 x 20 px box at
    ``part_x0``, its pose squeezed into it)."""
    ids = [tracker.update(frame(person(580 + 8 * t, 100, ARMS_UP))).track_id.item() for t in range(5)]
    ids.append(tracker.update(frame((np.array([620.0, 100, 640, 200]), person(620, 100, ARMS_UP)[1]))).track_id.item())
    arm = person(part_x0, 130, ARMS_UP, w=10.0, h=20.0)
    return ids + [tracker.update(frame(arm)).track_id.item()]


def test_a_person_leaving_the_frame_keeps_its_id_while_only_a_part_is_in_view(monkeypatch):
    assert leaving_ids(PoseTracker(COCO_PERSON_OKS_SIGMAS), part_x0=630) == [0] * 7
    # without the edge rule, the arm's box overlaps the track's predicted box too little
    monkeypatch.setattr("depotr.tracking.EDGE_MARGIN", -1.0)
    assert leaving_ids(PoseTracker(COCO_PERSON_OKS_SIGMAS), part_x0=630) == [0] * 6 + [1]


def test_a_person_entering_the_frame_keeps_the_id_it_got_as_an_arm():
    """An arm at the left edge (10 x 20 px), then the whole person (40 x 100 px) whose box holds
    the arm's: the share of the track's box inside the person's counts at the edge."""
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS)
    arm = (np.array([0.0, 130, 10, 150]), person(0, 130, ARMS_UP, w=10.0, h=20.0)[1])
    ids = [tracker.update(frame(arm)).track_id.item()]
    ids += [tracker.update(frame(person(0, 100, ARMS_UP))).track_id.item()]
    assert ids == [0, 0]


def test_a_person_lost_at_the_edge_is_refound_after_its_predicted_box_left_the_frame():
    """A person walking right is missed for 4 frames while only a leg is in view at the right
    edge; moved at its velocity, the track's box has left the frame, its last box has not."""
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, max_lost_frames=10)
    ids = [tracker.update(frame(person(580 + 8 * t, 100, ARMS_UP))).track_id.item() for t in range(5)]
    cut = (np.array([620.0, 100, 640, 200]), person(620, 100, ARMS_UP)[1])  # half out of the frame
    ids.append(tracker.update(frame(cut)).track_id.item())
    for _ in range(6):
        tracker.update(frame())
    leg = (np.array([632.0, 170, 640, 200]), person(632, 170, ARMS_UP, w=8.0, h=30.0)[1])
    ids.append(tracker.update(frame(leg)).track_id.item())
    assert ids == [0] * 7


def test_the_edge_rule_does_not_match_a_small_box_away_from_the_edge():
    """A 10 x 20 px box inside a track's predicted box but not at the frame's edge is another
    person (e.g. a far one behind), as IoU says."""
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS)
    for t in range(5):
        tracker.update(frame(person(300 + 8 * t, 100, ARMS_UP)))
    assert tracker.update(frame(person(350, 130, ARMS_UP, w=10.0, h=20.0))).track_id.tolist() == [1]


def test_one_euro_filter_matches_a_hand_computation():
    # min_cutoff 1 Hz, beta 0.1, d_cutoff 1 Hz, dt 0.1 s; alpha(c) = 1 / (1 + 1 / (2 pi c dt)).
    # alpha(1) = 1 / (1 + 1.591549) = 0.385870.
    # x = 0: the first sample is returned as is; value 0, speed 0.
    # x = 1: speed = 0.385870 * (1 - 0) / 0.1 = 3.858695; cutoff = 1.385870; alpha = 0.465460
    #        -> value = 0.465460.
    # x = 3: speed = 0.385870 * (3 - 0.465460) / 0.1 + 0.614130 * 3.858695 = 12.149760;
    #        cutoff = 2.214976; alpha = 1 / (1 + 1 / (2 pi 0.2214976)) = 0.581918
    #        -> value = 0.581918 * 3 + 0.418082 * 0.465460 = 1.940281.
    f = OneEuroFilter(min_cutoff=1.0, beta=0.1, d_cutoff=1.0)
    outputs = [float(f(np.array([x, 5.0]), 0.1)[0]) for x in (0.0, 1.0, 3.0)]
    np.testing.assert_allclose(outputs, [0.0, 0.465460, 1.940281], atol=2e-6)
    np.testing.assert_allclose(f.value[1], 5.0)  # a constant signal stays put
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroFilter(0.0, 0.1, 1.0)
    # cutoff_scale 2 on the second sample: cutoff = 2 x 1.385870 = 2.771739; alpha = 0.635241
    g = OneEuroFilter(min_cutoff=1.0, beta=0.1, d_cutoff=1.0)
    g(np.array([0.0]), 0.1)
    np.testing.assert_allclose(g(np.array([1.0]), 0.1, np.array([2.0])), [0.635241], atol=2e-6)
    with pytest.raises(ValueError, match="cutoff scale must be > 0"):
        g(np.array([1.0]), 0.1, np.array([0.0]))


def test_smoothing_reduces_jitter_per_track_and_starts_fresh_on_a_new_track():
    rng = np.random.default_rng(1)
    tracker = PoseTracker(
        COCO_PERSON_OKS_SIGMAS, fps=30.0, smoothing=(1.0, 0.05, 1.0), max_lost_frames=0, score_power=0.0
    )
    raw, smoothed = [], []
    for _ in range(30):  # a person standing still, keypoints jittering by ~2 px
        box, kps = person(100, 100, ARMS_UP)
        kps[:, :2] += rng.normal(0, 2.0, (K, 2))
        out = tracker.update(frame((box, kps)))
        raw.append(kps[:, :2])
        smoothed.append(out.pred_keypoints[0, :, :2].numpy())
        np.testing.assert_array_equal(out.pred_keypoints[0, :, 2].numpy(), kps[:, 2])  # scores unchanged
    np.testing.assert_allclose(smoothed[0], raw[0], atol=1e-4)  # the first pose is not filtered

    def jitter(poses):
        return np.abs(np.diff(np.stack(poses), 2, axis=0)).mean()

    assert jitter(smoothed) < 0.3 * jitter(raw)
    tracker.update(frame())  # the track ends (max_lost_frames 0)
    box, kps = person(100, 100, ARMS_DOWN)
    out = tracker.update(frame((box, kps)))
    assert out.track_id.tolist() == [1]
    np.testing.assert_allclose(out.pred_keypoints[0].numpy(), kps, atol=1e-4)  # a fresh filter


def still_person_smoothed(scores: np.ndarray, score_power: float = 2.0) -> np.ndarray:
    """(30, K, 2) smoothed keypoints of a person standing still, its keypoints jittering by
    N(0, 2 px) and scoring ``scores`` (K,)."""
    rng = np.random.default_rng(2)
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, smoothing=(1.0, 0.2, 1.0), score_power=score_power)
    out = []
    for _ in range(30):
        box, kps = person(100, 100, ARMS_UP)
        kps[:, :2] += rng.normal(0, 2.0, (K, 2))
        kps[:, 2] = scores
        out.append(tracker.update(frame((box, kps))).pred_keypoints[0, :, :2].numpy())
    return np.stack(out)


def test_unsure_keypoints_are_smoothed_more():
    def jitter(poses):
        return np.abs(np.diff(poses, 2, axis=0)).mean()

    unsure = np.arange(K) % 2 == 0
    smoothed = still_person_smoothed(np.where(unsure, 0.25, 0.9))  # one pose, mixed scores
    assert jitter(smoothed[:, unsure]) < 0.5 * jitter(smoothed[:, ~unsure])
    # at score_ref (0.5) the cutoff is One-Euro's own
    half = np.full(K, 0.5)
    np.testing.assert_allclose(still_person_smoothed(half), still_person_smoothed(half, score_power=0.0), atol=1e-5)
    # a score of 0 or NaN is clipped to 0.05: the keypoint is smoothed hard but still defined
    assert np.isfinite(still_person_smoothed(np.where(unsure, np.nan, 0.0))).all()


def test_tracker_arguments_are_checked():
    with pytest.raises(ValueError, match="iou_weight"):
        PoseTracker(COCO_PERSON_OKS_SIGMAS, iou_weight=1.5)
    with pytest.raises(ValueError, match="velocity_gain"):
        PoseTracker(COCO_PERSON_OKS_SIGMAS, velocity_gain=-0.1)
    with pytest.raises(ValueError, match="max_lost_frames"):
        PoseTracker(COCO_PERSON_OKS_SIGMAS, max_lost_frames=-1)
    with pytest.raises(ValueError, match="One-Euro"):
        PoseTracker(COCO_PERSON_OKS_SIGMAS, smoothing=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="score_ref"):
        PoseTracker(COCO_PERSON_OKS_SIGMAS, score_ref=0.0)
    for fps in (0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps must be finite and > 0"):
            PoseTracker(COCO_PERSON_OKS_SIGMAS, fps=fps)


@pytest.mark.parametrize(
    "key, value, smooth, message",
    [
        ("TEST.TRACK.IOU_WEIGHT", "2.0", False, "iou_weight, min_similarity and velocity_gain must be in"),
        ("TEST.TRACK.MAX_LOST_FRAMES", "-1", False, "max_lost_frames must be >= 0, got -1"),
        ("TEST.SMOOTH.MIN_CUTOFF", "0.0", True, "One-Euro filter needs min_cutoff > 0"),
    ],
)
def test_a_bad_tracking_config_value_is_a_config_error_naming_its_section(key, value, smooth, message):
    # before: a plain ValueError, which the demo showed as a traceback (status 1), not "error: ..." (status 2)
    cfg = load_depotr_config(INSTANT_CONFIG, [key, value])
    with pytest.raises(ConfigError, match=f"^TEST.TRACK / TEST.SMOOTH: {message}"):
        PoseTracker.from_config(cfg, smooth=smooth)
    with pytest.raises(ValueError, match="fps must be finite") as error:  # the caller's fps: not the config's
        PoseTracker.from_config(load_depotr_config(INSTANT_CONFIG), fps=0.0)
    assert not isinstance(error.value, ConfigError)


def test_video_api_on_a_predictor_tracks_and_reads_the_config():
    cfg = load_depotr_config(
        INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", "TEST.TRACK.MAX_LOST_FRAMES", "2", "TEST.SMOOTH.BETA", "0.5"]
    )
    predictor = Predictor(cfg, random_weights=True)
    frames = [np.random.default_rng(i).integers(0, 255, (96, 128, 3), dtype=np.uint8) for i in range(3)]
    per_frame = track_video(predictor, frames, fps=25.0, smooth=True)
    assert [out.track_id.tolist() for out in per_frame] == [[0], [0], [0]]  # the whole frame: one person
    video = VideoPoseTracker(predictor, fps=25.0, smooth=True)
    assert video.tracker.max_lost_frames == 2 and video.tracker.smoothing == (1.0, 0.5, 1.0)
    boxes = [[10, 10, 60, 90], [70, 5, 120, 90]]
    first = video(frames[0], boxes=boxes)
    second = video(frames[0], boxes=boxes[::-1])
    assert first.track_id.tolist() == [0, 1] and second.track_id.tolist() == [1, 0]  # ids follow the persons
    for out in (first, second):
        assert out.pred_keypoints.shape == (2, K, 3) and math.isfinite(float(out.pred_keypoints.sum()))
    with pytest.raises(ValueError, match="frame 2 is 48x128 .*first frame 96x128"):
        video(frames[0][:48], boxes=boxes)
    # before: a frame refused for its size was not counted: the next one was named frame 2 again,
    # and the tracks did not age (MAX_LOST_FRAMES 2: kept over 3 frames without the persons)
    with pytest.raises(ValueError, match="frame 3 is 48x128"):
        video(frames[0][:48], boxes=boxes)
    video(frames[0], boxes=[])
    assert video(frames[0], boxes=boxes).track_id.tolist() == [2, 3] and video.tracker.frame == 5
    # before: "of image 0" (the frame's index in the Predictor's one-image batch)
    with pytest.raises(ValueError, match="precomputed person box 0 of image 6 is degenerate"):
        video(frames[0], boxes=[[20, 10, 5, 40]])


def test_video_api_takes_the_box_mode_of_the_predictor():
    # before: VideoPoseTracker's call, documented with Predictor.__call__'s arguments, had no box_mode
    # (TypeError), so COCO's XYWH boxes could not be passed as they are
    predictor = Predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu"]), random_weights=True)
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    out = VideoPoseTracker(predictor)(frame, [[10, 5, 50, 80]], box_mode=BoxMode.XYWH_ABS)
    assert out.pred_boxes.tensor.tolist() == [[10.0, 5.0, 60.0, 85.0]] and out.track_id.tolist() == [0]


def test_an_unreadable_frame_file_counts_as_a_frame_without_persons(tmp_path):
    """As the demo's skipped files: the tracks age by the frame and the next frame is named by
    its index in the sequence (before: neither, the frame was not counted)."""
    cfg = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", "TEST.TRACK.MAX_LOST_FRAMES", "1"])
    video = VideoPoseTracker(Predictor(cfg, random_weights=True))
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    box = [[10, 10, 60, 90]]
    assert video(image, boxes=box).track_id.tolist() == [0]
    with pytest.raises(ValueError, match="broken.jpg' is truncated or corrupt"):
        video(str(broken), boxes=box)
    with pytest.raises(FileNotFoundError, match="missing.png' does not exist"):
        video(tmp_path / "missing.png", boxes=box)
    assert video.tracker.frame == 2
    with pytest.raises(ValueError, match="person box 0 of image 3 is degenerate"):
        video(image, boxes=[[20, 10, 5, 40]])  # the caller's error: not counted, named frame 3
    # two frames without the person: over MAX_LOST_FRAMES 1, its track ended
    assert video(image, boxes=box).track_id.tolist() == [1] and video.tracker.frame == 3


def test_editing_the_result_in_place_leaves_the_input_alone():
    """Detectron2's instances_to_coco_json shifts keypoints in place; a tracked frame's result
    must not share its keypoints with the frame's instances (the benchmark tracks them twice)."""
    instances = frame(person(100, 100, ARMS_UP))
    before = instances.pred_keypoints.clone()
    out = PoseTracker(COCO_PERSON_OKS_SIGMAS).update(instances)
    out.pred_keypoints[:, :, :2] -= 0.5
    torch.testing.assert_close(instances.pred_keypoints, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_tracked_frame_on_the_gpu_can_be_filtered_by_its_scores():
    """Every field of the result on the input's device: indexing by a CUDA mask works."""
    out = PoseTracker(COCO_PERSON_OKS_SIGMAS).update(frame(person(100, 100, ARMS_UP)).to("cuda"))
    assert out.track_id.device == out.pred_keypoints.device == out.scores.device
    assert out[out.scores > 0.5].track_id.tolist() == [0]


@pytest.mark.parametrize("thresh, warned", [(0.9, True), (1.0, False)])
def test_tracking_from_a_config_with_oks_nms_on_warns(caplog, thresh, warned):
    cfg = load_depotr_config(INSTANT_CONFIG, ["TEST.OKS_NMS_THRESH", str(thresh)])
    with caplog.at_level(logging.WARNING, logger="depotr.tracking"):
        PoseTracker.from_config(cfg)
    assert ("tracking_config(cfg)" in caplog.text) == warned


def test_oks_nms_set_on_in_test_track_is_warned_about_by_that_key(caplog):
    # before: the demo's --track TEST.TRACK.OKS_NMS_THRESH 0.9 was told to build its Predictor from
    # tracking_config(cfg), which the demo does: the key to change is TEST.TRACK.OKS_NMS_THRESH
    cfg = tracking_config(load_depotr_config(INSTANT_CONFIG, ["TEST.TRACK.OKS_NMS_THRESH", "0.9"]))
    with caplog.at_level(logging.WARNING, logger="depotr.tracking"):
        PoseTracker.from_config(cfg)
    assert "set TEST.TRACK.OKS_NMS_THRESH 1.0" in caplog.text and "tracking_config" not in caplog.text


@pytest.mark.parametrize("frozen", [False, True])
def test_tracking_config_replaces_the_oks_nms_threshold_on_a_copy(frozen):
    cfg = load_depotr_config(INSTANT_CONFIG, ["TEST.TRACK.OKS_NMS_THRESH", "0.95"])
    if frozen:
        cfg.freeze()
    out = tracking_config(cfg)
    assert out.TEST.OKS_NMS_THRESH == 0.95 and cfg.TEST.OKS_NMS_THRESH == 0.9  # the input is left alone
    assert out.is_frozen() == frozen
    assert load_depotr_config(INSTANT_CONFIG).TEST.TRACK.OKS_NMS_THRESH == 1.0  # off by default
