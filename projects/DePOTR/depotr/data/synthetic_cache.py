"""Writing the synthetic dataset (:mod:`depotr.data.synthetic`) to disk and caching it.

Cache layout (docs/synthetic.md): one folder (an *entry*) per dataset spec, never changed once
written, ``<root>/<split>-n<num_images>-s<seed>-<image_size>px-v<version>[r<revision>]/`` with
``images/000000.jpg ...`` (BGR JPEGs), ``annotations.json`` (COCO person keypoints) and
``MANIFEST.json`` (the spec, and every file with its size in bytes). A missing entry is rendered
under a lock into a temporary folder renamed into place; every use checks it against its manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..cli import ConfigError
from ..file_io import TEMPORARY_PREFIX, temporary_path
from .synthetic import DEFAULT_IMAGE_SIZE, GENERATOR_VERSION, SPLIT_CODES, coco_categories, render_synthetic_image
from .synthetic_v4 import render_synthetic_image_v4

logger = logging.getLogger(__name__)

__all__ = [
    "GENERATOR_REVISIONS",
    "RENDERERS",
    "check_generator_version",
    "ensure_synthetic_split",
    "generate_synthetic_split",
    "synthetic_entry_name",
    "synthetic_split_paths",
    "verify_synthetic_split",
]

MANIFEST_NAME = "MANIFEST.json"
ANNOTATIONS_NAME = "annotations.json"
IMAGES_DIR = "images"
# Generator version -> its renderer (seed, split code, index, image size) -> (image, annotations).
RENDERERS: Dict[int, Callable[[int, int, int, int], Tuple[np.ndarray, List[Dict[str, Any]]]]] = {
    GENERATOR_VERSION: render_synthetic_image,
    4: render_synthetic_image_v4,
}
# Generator version -> the revision of its output; bump it when a version's images or annotations
# change (a revision above 1 is part of the entry name and the manifest's spec: docs/synthetic.md).
# Version 4 revision 2: boxes and areas of the visible pixels, persons of fewer than 50 visible
# pixels left out, figures reaching the border truncated.
GENERATOR_REVISIONS: Dict[int, int] = {GENERATOR_VERSION: 1, 4: 2}


def check_generator_version(version: int) -> int:
    """``version`` as an int; a ConfigError naming the known versions when there is no such generator."""
    if int(version) not in RENDERERS:
        raise ConfigError(
            f"DATASETS.SYNTHETIC.GENERATOR_VERSION: unknown synthetic generator version {version!r}; expected one "
            f"of {sorted(RENDERERS)}"
        )
    return int(version)


def synthetic_entry_name(
    split: str, num_images: int, seed: int, image_size: int = DEFAULT_IMAGE_SIZE, version: int = GENERATOR_VERSION
) -> str:
    """Folder name of a dataset spec, e.g. ``train-n2000-s0-256px-v3`` or ``val-n200-s0-256px-v4r2``
    (the version's revision when above 1, :data:`GENERATOR_REVISIONS`). Raises a ConfigError naming
    the field (and its config key) when the seed or the number of images is negative or the image
    size below 1."""
    version = check_generator_version(version)
    for field, value, low in (
        ("DATASETS.SYNTHETIC.SEED", seed, 0),
        (f"number of {split} images (DATASETS.SYNTHETIC.NUM_{split.upper()}_IMAGES)", num_images, 0),
        ("image size", image_size, 1),
    ):
        if int(value) < low:
            raise ConfigError(f"synthetic dataset: {field} must be an integer >= {low}, got {value!r}")
    revision = GENERATOR_REVISIONS[version]
    return f"{split}-n{int(num_images)}-s{int(seed)}-{int(image_size)}px-v{version}" + (
        f"r{revision}" if revision > 1 else ""
    )


def synthetic_split_paths(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    version: int = GENERATOR_VERSION,
) -> Dict[str, str]:
    """Paths of a spec's cache entry inside ``root``: ``split_dir`` (the entry), ``json_file``,
    ``image_root`` and ``manifest``."""
    split_dir = os.path.join(root, synthetic_entry_name(split, num_images, seed, image_size, version))
    return {
        "split_dir": split_dir,
        "json_file": os.path.join(split_dir, ANNOTATIONS_NAME),
        "image_root": os.path.join(split_dir, IMAGES_DIR),
        "manifest": os.path.join(split_dir, MANIFEST_NAME),
    }


def _split_code(split: str) -> int:
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    return SPLIT_CODES[split]


def _spec(split: str, num_images: int, seed: int, image_size: int, version: int) -> Dict[str, Any]:
    """The manifest's spec; ``generator_revision`` only when above 1 (manifests written before
    revisions existed still match)."""
    spec: Dict[str, Any] = {"generator_version": int(version)}
    if GENERATOR_REVISIONS[int(version)] > 1:
        spec["generator_revision"] = GENERATOR_REVISIONS[int(version)]
    spec.update(split=split, seed=int(seed), num_images=int(num_images), image_size=int(image_size))
    return spec


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing, never deleted: deleting a lock file
    lets a waiting process lock an orphaned copy)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _render_job(args: Tuple[int, int, int, int, str, int, int]) -> Tuple[Dict[str, Any], List[Dict[str, Any]], int]:
    """Renders and writes one image; returns its COCO image entry, annotations and file size."""
    seed, split_code, index, image_size, image_root, quality_seed, version = args
    img, annos = RENDERERS[version](seed, split_code, index, image_size)
    file_name = f"{index:06d}.jpg"
    path = os.path.join(image_root, file_name)
    quality = 80 + (quality_seed % 16)
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {path}")
    image = {"id": index + 1, "file_name": file_name, "height": image_size, "width": image_size}
    return image, annos, os.path.getsize(path)


def generate_synthetic_split(
    out_dir: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    num_workers: Optional[int] = None,
    version: int = GENERATOR_VERSION,
) -> str:
    """Renders a split with generator ``version`` into the new or empty folder ``out_dir``
    (``images/``, ``annotations.json``, then ``MANIFEST.json``) and returns the json path; no locking
    and no atomicity (:func:`ensure_synthetic_split` adds both). ``num_workers`` processes (default:
    the CPU count, at most 8) render images in parallel; the output does not depend on it."""
    version, split_code = check_generator_version(version), _split_code(split)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"synthetic split folder {out_dir} is not empty")
    image_root = os.path.join(out_dir, IMAGES_DIR)
    os.makedirs(image_root, exist_ok=True)
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    qualities = np.random.default_rng([int(seed), split_code, 2**31 - 1]).integers(0, 2**31 - 1, num_images)
    jobs = [(int(seed), split_code, i, int(image_size), image_root, int(q), version) for i, q in enumerate(qualities)]
    start = time.perf_counter()
    if num_workers <= 1 or num_images < 32:
        results = [_render_job(job) for job in jobs]
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        # No cv2.setNumThreads in the workers: in a child forked after the parent used cv2's
        # thread pool it blocks forever (seen with opencv 4.11).
        # A process pool that raises (BrokenProcessPool) when a worker dies, e.g. killed for memory:
        # multiprocessing.Pool would wait forever for its images, holding the entry's lock.
        with ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
            chunksize = max(1, min(32, num_images // (4 * num_workers)))
            try:
                results = list(pool.map(_render_job, jobs, chunksize=chunksize))
            except BrokenProcessPool as e:
                raise RuntimeError(f"synthetic dataset {out_dir}: a rendering process died ({e})") from None
    images, annotations, files = [], [], {}
    for image, annos, size in results:
        images.append(image)
        files[f"{IMAGES_DIR}/{image['file_name']}"] = size
        for anno in annos:
            anno.update(id=len(annotations) + 1, image_id=image["id"])
            annotations.append(anno)
    info = {"description": f"DePOTR synthetic persons ({split})", "version": str(version), "seed": int(seed)}
    dataset = dict(info=info, licenses=[], images=images, annotations=annotations, categories=coco_categories())
    json_file = os.path.join(out_dir, ANNOTATIONS_NAME)
    with open(json_file, "w") as f:
        json.dump(dataset, f)
    files[ANNOTATIONS_NAME] = os.path.getsize(json_file)
    seconds = time.perf_counter() - start
    manifest = _spec(split, num_images, seed, image_size, version)
    manifest.update(num_annotations=len(annotations), seconds=round(seconds, 2), num_workers=num_workers, files=files)
    with open(os.path.join(out_dir, MANIFEST_NAME), "w") as f:
        json.dump(manifest, f)
    logger.info(
        "Generated %(num_images)d synthetic %(split)s images (generator v%(generator_version)d, %(num_annotations)d "
        "persons) in %(seconds).1f s with %(num_workers)d workers: %(dir)s",
        {**manifest, "dir": out_dir},
    )
    return json_file


def verify_synthetic_split(
    paths: Dict[str, str],
    split: str,
    num_images: int,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    version: int = GENERATOR_VERSION,
) -> None:
    """Cheap integrity check of a cache entry (``paths`` from :func:`synthetic_split_paths`): the
    manifest matches the spec, every file it lists exists with its size, and ``annotations.json``
    parses and lists ``num_images`` images. Raises ValueError naming the entry and the failing file."""
    entry = paths["split_dir"]

    def fail(problem: str) -> ValueError:
        return ValueError(f"synthetic dataset cache {entry}: {problem}; delete this folder to have it generated again")

    def load(name: str) -> Any:
        try:
            with open(os.path.join(entry, name)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise fail(f"{name} is missing") from None
        except (OSError, ValueError) as e:
            raise fail(f"{name} cannot be read as json ({e})") from None

    manifest = load(MANIFEST_NAME)
    expected = _spec(split, num_images, seed, image_size, version)
    if not isinstance(manifest, dict) or ANNOTATIONS_NAME not in manifest.get("files", {}):
        raise fail(f"{MANIFEST_NAME} has no 'files' table listing {ANNOTATIONS_NAME}")
    differs = {k: manifest.get(k) for k, v in expected.items() if manifest.get(k) != v}
    if differs:
        raise fail(f"{MANIFEST_NAME} describes another dataset: {differs}, expected {expected}")
    for name, size in manifest["files"].items():
        try:
            actual = os.path.getsize(os.path.join(entry, name))
        except OSError:
            raise fail(f"{name} is missing") from None
        if actual != size:
            raise fail(f"{name} has {actual} bytes, {MANIFEST_NAME} lists {size}")
    dataset = load(ANNOTATIONS_NAME)
    if not isinstance(dataset, dict) or len(dataset.get("images", [])) != num_images:
        raise fail(f"{ANNOTATIONS_NAME} does not list the {num_images} images of this spec")


def _remove_stale_temporaries(root: str, entry_name: str) -> None:
    """Deletes temporary folders of ``entry_name`` that killed generations left in ``root``
    (call with the entry's lock held)."""
    for name in os.listdir(root):
        if name.startswith(TEMPORARY_PREFIX) and name.endswith("-" + entry_name):
            logger.info("Removing %s, left by an interrupted generation.", os.path.join(root, name))
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def ensure_synthetic_split(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    num_workers: Optional[int] = None,
    version: int = GENERATOR_VERSION,
) -> str:
    """Returns the json of a spec's cache entry in ``root`` (generator ``version``), rendering
    the entry first when it does not exist (see the module docstring), and checks it with
    :func:`verify_synthetic_split`."""
    _split_code(split)
    paths = synthetic_split_paths(root, split, num_images, seed, image_size, version)
    entry = paths["split_dir"]
    if not os.path.isdir(entry):
        os.makedirs(root, exist_ok=True)
        entry_name = os.path.basename(entry)
        with _locked(os.path.join(root, f".{entry_name}.lock")):
            if not os.path.isdir(entry):  # another process may have made it meanwhile
                _remove_stale_temporaries(root, entry_name)
                logger.info("Synthetic %s split %s not cached yet; generating %d images.", split, entry, num_images)
                tmp_dir = temporary_path(entry)
                os.mkdir(tmp_dir)
                try:
                    generate_synthetic_split(tmp_dir, split, num_images, seed, image_size, num_workers, version)
                    os.rename(tmp_dir, entry)
                finally:
                    shutil.rmtree(tmp_dir, ignore_errors=True)
    verify_synthetic_split(paths, split, num_images, seed, image_size, version)
    return paths["json_file"]
