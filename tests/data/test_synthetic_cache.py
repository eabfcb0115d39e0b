"""The synthetic dataset's cache: one immutable entry per spec, generated once under a lock,
checked on every use; concurrent runs of other specs never disturb each other."""

import json
import multiprocessing as mp
import os
import shutil
import signal
import traceback

import pytest

import depotr.data.synthetic_cache as synthetic_cache
from depotr.data.synthetic import GENERATOR_VERSION
from depotr.data.synthetic_cache import (
    GENERATOR_REVISIONS,
    RENDERERS,
    ensure_synthetic_split,
    generate_synthetic_split,
    synthetic_entry_name,
    synthetic_split_paths,
    verify_synthetic_split,
)
from depotr.data.synthetic_mpii import ensure_synthetic_mpii_split

from .conftest import SMALL_NUM_IMAGES, SMALL_SEED

TINY = 64  # px: small images keep these tests fast


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def folder_bytes(folder: str) -> dict:
    """Relative path -> content of every file below ``folder``."""
    out = {}
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            out[os.path.relpath(path, folder)] = read_bytes(path)
    return out


def test_same_spec_gives_identical_files(tmp_path, small_synthetic):
    _, paths, _ = small_synthetic
    again = synthetic_split_paths(str(tmp_path), "train", SMALL_NUM_IMAGES, SMALL_SEED)
    ensure_synthetic_split(str(tmp_path), "train", SMALL_NUM_IMAGES, SMALL_SEED)
    assert read_bytes(again["json_file"]) == read_bytes(paths["json_file"])
    assert folder_bytes(again["image_root"]) == folder_bytes(paths["image_root"])


def test_different_seed_gives_different_data(tmp_path, small_synthetic):
    _, paths, _ = small_synthetic
    ensure_synthetic_split(str(tmp_path), "train", SMALL_NUM_IMAGES, SMALL_SEED + 1)
    other = synthetic_split_paths(str(tmp_path), "train", SMALL_NUM_IMAGES, SMALL_SEED + 1)
    assert read_bytes(other["json_file"]) != read_bytes(paths["json_file"])
    a, b = folder_bytes(other["image_root"]), folder_bytes(paths["image_root"])
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)


def test_parallel_generation_equals_serial(tmp_path):
    serial = generate_synthetic_split(str(tmp_path / "serial"), "val", 32, 1, num_workers=1)
    parallel = generate_synthetic_split(str(tmp_path / "parallel"), "val", 32, 1, num_workers=2)
    assert read_bytes(serial) == read_bytes(parallel)
    assert folder_bytes(str(tmp_path / "serial" / "images")) == folder_bytes(str(tmp_path / "parallel" / "images"))


def test_one_entry_per_spec_reused_and_never_rewritten(tmp_path):
    root = str(tmp_path)
    small = synthetic_split_paths(root, "val", 3, 0, TINY)
    assert os.path.basename(small["split_dir"]) == f"val-n3-s0-{TINY}px-v{GENERATOR_VERSION}"
    ensure_synthetic_split(root, "val", 3, 0, TINY)
    before = folder_bytes(small["split_dir"])
    stamp = os.stat(small["json_file"]).st_mtime_ns
    manifest = json.loads(before["MANIFEST.json"])
    assert (manifest["num_images"], manifest["seed"], manifest["image_size"]) == (3, 0, TINY)
    listed = {name: len(content) for name, content in before.items() if name != "MANIFEST.json"}
    assert manifest["files"] == listed and len(listed) == 3 + 1  # every image and the json

    ensure_synthetic_split(root, "val", 3, 0, TINY)
    assert os.stat(small["json_file"]).st_mtime_ns == stamp  # reused

    # Other specs get their own entries; the first one is left exactly as it was.
    for num_images, seed, size in [(5, 0, TINY), (3, 1, TINY), (3, 0, TINY + 32)]:
        json_file = ensure_synthetic_split(root, "val", num_images, seed, size)
        images = json.loads(read_bytes(json_file))["images"]
        assert len(images) == num_images and images[0]["width"] == size
    assert folder_bytes(small["split_dir"]) == before
    assert sorted(n for n in os.listdir(root) if not n.startswith(".")) == sorted(
        f"val-n{n}-s{s}-{px}px-v{GENERATOR_VERSION}"
        for n, s, px in [(3, 0, TINY), (5, 0, TINY), (3, 1, TINY), (3, 0, TINY + 32)]
    )


def _delete_image(paths):
    os.remove(os.path.join(paths["image_root"], "000001.jpg"))


def _truncate_json(paths):
    with open(paths["json_file"], "r+") as f:
        f.truncate(100)


def _scramble_json_same_size(paths):
    size = os.path.getsize(paths["json_file"])
    with open(paths["json_file"], "w") as f:
        f.write("{" * size)


def _delete_manifest(paths):
    os.remove(paths["manifest"])


@pytest.mark.parametrize(
    "damage, named",
    [
        (_delete_image, r"images/000001\.jpg is missing"),
        (_truncate_json, r"annotations\.json has 100 bytes"),
        (_scramble_json_same_size, r"annotations\.json cannot be read as json"),
        (_delete_manifest, r"MANIFEST\.json is missing"),
    ],
    ids=["deleted-image", "truncated-json", "garbage-json", "no-manifest"],
)
def test_damaged_entry_is_an_error_naming_the_file(tmp_path, damage, named):
    root = str(tmp_path)
    paths = synthetic_split_paths(root, "val", 3, 0, TINY)
    ensure_synthetic_split(root, "val", 3, 0, TINY)
    damage(paths)
    with pytest.raises(ValueError, match=named) as error:
        ensure_synthetic_split(root, "val", 3, 0, TINY)
    assert paths["split_dir"] in str(error.value) and "delete this folder" in str(error.value)


def test_failed_generation_leaves_no_entry_and_its_leftovers_are_removed(tmp_path, monkeypatch):
    root = str(tmp_path)
    paths = synthetic_split_paths(root, "val", 3, 0, TINY)
    entry = os.path.basename(paths["split_dir"])
    killed = tmp_path / f".tmp-0123456789ab-{entry}"  # what a kill -9 mid-generation leaves
    (killed / "images").mkdir(parents=True)
    (killed / "images" / "000000.jpg").write_bytes(b"half")

    def failing_render(*args):
        raise RuntimeError("renderer crashed")

    monkeypatch.setitem(synthetic_cache.RENDERERS, GENERATOR_VERSION, failing_render)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        ensure_synthetic_split(root, "val", 3, 0, TINY)
    assert not os.path.exists(paths["split_dir"])
    assert [n for n in os.listdir(root) if n.startswith(".tmp-")] == []  # neither the old nor its own
    monkeypatch.undo()
    ensure_synthetic_split(root, "val", 3, 0, TINY)
    verify_synthetic_split(paths, "val", 3, 0, TINY)


RENDER = RENDERERS[GENERATOR_VERSION]


def _render_or_die(seed, split_code, index, image_size):
    """A renderer whose process dies (as one killed for memory would) on image 5."""
    if index == 5:
        os._exit(1)
    return RENDER(seed, split_code, index, image_size)


def test_a_rendering_process_that_dies_is_an_error_not_a_hang(tmp_path, monkeypatch):
    """multiprocessing.Pool waited forever for a dead worker's images (holding the entry's lock,
    so every other run of the spec waited too); the generation now fails, naming its folder."""
    monkeypatch.setitem(synthetic_cache.RENDERERS, GENERATOR_VERSION, _render_or_die)
    root = str(tmp_path)

    def hung(*_):
        raise AssertionError("the generation still waits for the dead process after 60 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        with pytest.raises(RuntimeError, match=r"synthetic dataset .*val-n32-s0-.*: a rendering process died"):
            ensure_synthetic_split(root, "val", 32, 0, TINY, num_workers=2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sorted(os.listdir(root)) == [f".val-n32-s0-{TINY}px-v{GENERATOR_VERSION}.lock"]


def test_mpii_files_regenerate_a_deleted_entry_and_check_a_damaged_one(tmp_path):
    """The cache's error says "delete this folder to have it generated again": through the MPII
    files (which existed and were reused) the deleted entry's images were not generated again."""
    root = str(tmp_path)
    mpii = ensure_synthetic_mpii_split(root, "val", 3, 0, TINY)
    paths = synthetic_split_paths(root, "val", 3, 0, TINY)
    images = folder_bytes(paths["image_root"])
    shutil.rmtree(paths["split_dir"])
    assert ensure_synthetic_mpii_split(root, "val", 3, 0, TINY) == mpii
    assert folder_bytes(paths["image_root"]) == images
    _delete_image(paths)
    with pytest.raises(ValueError, match=r"images/000001.jpg is missing; delete this folder"):
        ensure_synthetic_mpii_split(root, "val", 3, 0, TINY)


def test_entry_names_carry_the_generator_revision_above_1():
    """Version 3 (revision 1) keeps its names, so the existing entries stay valid; version 4's
    output changed (revision 2: COCO's boxes and areas), so its data goes to a new entry."""
    assert GENERATOR_REVISIONS.keys() == RENDERERS.keys()
    assert GENERATOR_REVISIONS[GENERATOR_VERSION] == 1 and GENERATOR_REVISIONS[4] == 2
    assert synthetic_entry_name("train", 2000, 0, 256, GENERATOR_VERSION) == "train-n2000-s0-256px-v3"
    assert synthetic_entry_name("val", 200, 0, 256, 4) == "val-n200-s0-256px-v4r2"


def test_one_entry_per_generator_version(tmp_path):
    """Versions 3 and 4 of one spec are two entries with different images; the manifest records
    the version (and a revision above 1), and an entry of one version or revision does not pass
    as another."""
    root = str(tmp_path)
    files = {v: ensure_synthetic_split(root, "val", 3, 0, TINY, version=v) for v in (GENERATOR_VERSION, 4)}
    assert os.path.basename(os.path.dirname(files[4])).endswith("-v4r2") and files[4] != files[GENERATOR_VERSION]
    v3_paths = synthetic_split_paths(root, "val", 3, 0, TINY, GENERATOR_VERSION)
    v4_paths = synthetic_split_paths(root, "val", 3, 0, TINY, 4)
    v4_manifest = json.loads(read_bytes(v4_paths["manifest"]))
    assert v4_manifest["generator_version"] == 4 and v4_manifest["generator_revision"] == 2
    assert "generator_revision" not in json.loads(read_bytes(v3_paths["manifest"]))  # as before revisions
    v3_images, v4_images = folder_bytes(v3_paths["image_root"]), folder_bytes(v4_paths["image_root"])
    assert v3_images.keys() == v4_images.keys() and all(v3_images[k] != v4_images[k] for k in v3_images)
    # An entry of version 4's first revision (its manifest without a revision) under the new name.
    del v4_manifest["generator_revision"]
    with open(v4_paths["manifest"], "w") as f:
        json.dump(v4_manifest, f)
    with pytest.raises(ValueError, match="describes another dataset"):
        verify_synthetic_split(v4_paths, "val", 3, 0, TINY, version=4)
    os.rename(v4_paths["split_dir"], v4_paths["split_dir"] + "-moved")
    os.rename(v3_paths["split_dir"], v4_paths["split_dir"])  # a v3 entry under the v4 name
    with pytest.raises(ValueError, match="describes another dataset"):
        verify_synthetic_split(v4_paths, "val", 3, 0, TINY, version=4)


def test_unknown_generator_version_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"generator version 9; expected one of \[3, 4\]"):
        ensure_synthetic_split(str(tmp_path), "val", 3, 0, TINY, version=9)


def _use_split(root, num_images, barrier, errors):
    """Child process: gets its split, waits until the other child has its own, then checks that
    its data is still all there."""
    try:
        json_file = ensure_synthetic_split(root, "val", num_images, 0, TINY)
        barrier.wait(timeout=120)
        dataset = json.loads(read_bytes(json_file))
        assert len(dataset["images"]) == num_images, f"{len(dataset['images'])} images, expected {num_images}"
        image_root = os.path.join(os.path.dirname(json_file), "images")
        for image in dataset["images"]:
            assert os.path.isfile(os.path.join(image_root, image["file_name"])), image["file_name"]
    except BaseException:
        errors.put(f"{num_images} images: {traceback.format_exc()}")
        raise


def test_two_processes_with_different_sizes_on_one_root_both_keep_their_data(tmp_path):
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=_use_split, args=(str(tmp_path), n, barrier, errors)) for n in (3, 5)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=180)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert [child.exitcode for child in children] == [0, 0], problems
