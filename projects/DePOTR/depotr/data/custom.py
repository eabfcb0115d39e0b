"""Your own keypoints: :func:`register_keypoint_dataset` registers a COCO-format keypoint file with
any skeleton, and :func:`fill_keypoint_config` sets the config's keypoint keys from it, so that it
trains and evaluates with nothing else set about keypoints (rules: docs/datasets.md)::

    register_keypoint_dataset("cars_train", "cars/train.json", "cars/images",
                              keypoint_names=["front_left", "front_right", "roof"],
                              flip_map=[("front_left", "front_right")], skeleton=[("front_left", "roof")])
"""

import difflib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..cli import ConfigError, listing
from ..file_io import is_finite_number, repeated_ids
from .dataset_mapper import annotations_to_arrays
from .keypoint_metadata import (
    COCO_PERSON_OKS_SIGMAS,
    coco_person_metadata,
    flip_indices,
    is_colour,
    person_metadata,
    warn_unpaired_mirrors,
)

__all__ = [
    "DEFAULT_OKS_SIGMA",
    "check_datasets_registered",
    "check_keypoint_count",
    "drawing_metadata",
    "fill_keypoint_config",
    "load_keypoint_json",
    "register_keypoint_dataset",
    "unregister_dataset",
]

# OKS sigma of keypoints registered without one: the mean of COCO's 17 (0.0669).
DEFAULT_OKS_SIGMA = float(np.mean(COCO_PERSON_OKS_SIGMAS))
# Drawing colour of skeleton edges given without one.
DEFAULT_EDGE_COLOUR = (255, 128, 0)
# The evaluator types Trainer.build_evaluator tells apart (anything else would be evaluated as "coco").
EVALUATOR_TYPES = ("coco", "crowdpose", "mpii_pckh")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:  # 64 or 64.0, as numpy-written files have them
    return is_finite_number(value) and value >= 0 and float(value).is_integer()


def _is_number_list(value: Any) -> bool:  # NaN and inf pass: annotations_to_arrays names them
    return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


# Fields read from every entry, with what each must be: by Detectron2's load_coco_json (images,
# categories), the mapper and pycocotools' keypoint evaluation (annotations, crowd ones included); a
# bare KeyError, a TypeError or AssertionError there otherwise, or worse, no error: an iscrowd "0"
# (truthy: a crowd region) or an image_id "1" (no image has it) drops the person without a word.
REQUIRED_JSON_FIELDS: Dict[str, Dict[str, Tuple[Callable[[Any], bool], str]]] = {
    "images": {
        "id": (_is_int, "an integer"),
        "file_name": (lambda v: isinstance(v, str) and v != "", "a file name"),
        "height": (lambda v: _is_whole(v) and v > 0, "a positive integer"),
        "width": (lambda v: _is_whole(v) and v > 0, "a positive integer"),
    },
    "annotations": {
        "id": (_is_int, "an integer"),
        "image_id": (_is_int, "an integer"),
        "category_id": (_is_int, "an integer"),
        "iscrowd": (lambda v: isinstance(v, (int, bool)) and v in (0, 1), "0 or 1 (or false / true)"),
        "bbox": (lambda v: _is_number_list(v) and len(v) == 4, "4 numbers [x, y, w, h]"),
        "keypoints": (_is_number_list, "a list of numbers"),
        "num_keypoints": (_is_whole, "an integer >= 0"),
    },
    "categories": {"id": (_is_int, "an integer"), "name": (lambda v: isinstance(v, str) and v != "", "a name")},
}
# Evaluator types whose evaluation reads each annotation's "area" (CrowdPose's files have none: its
# evaluation takes the box's area, xtcocotools' use_area=False; PCKh reads neither).
AREA_EVALUATOR_TYPES = ("coco",)
AREA_FIELD = {"area": (is_finite_number, "a number")}


def check_json_fields(what: str, entry: Dict[str, Any], fields: Dict[str, Tuple[Callable[[Any], bool], str]]) -> None:
    """A ConfigError ``"{what}: field F is V, expected E"`` for the first of ``fields`` (rules of
    ``REQUIRED_JSON_FIELDS``; each present in ``entry``) whose value in ``entry`` breaks its rule."""
    for field, (valid, expected) in fields.items():
        if not valid(entry[field]):
            raise ConfigError(f"{what}: field {field!r} is {entry[field]!r}, expected {expected}")


def unregister_dataset(name: str) -> None:
    """Removes ``name`` from Detectron2's catalogs so that it can be registered again."""
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)


def _index_edge_hint(edge: Sequence[Any], names: Sequence[str]) -> str:
    """For a skeleton ``edge`` of two 1-based keypoint indices (a COCO json category's "skeleton"),
    the edge by name; else ""."""
    if len(edge) == 2 and all(isinstance(i, int) and 1 <= i <= len(names) for i in edge):
        return f" (1-based indices as a COCO json's skeleton? name them: {[names[i - 1] for i in edge]})"
    return ""


def _check_metadata(
    name: str,
    keypoint_names: Sequence[str],
    flip_map: Sequence[Sequence[str]],
    skeleton: Optional[Sequence[Sequence[Any]]],
    oks_sigmas: Optional[Sequence[float]],
    evaluator_type: str,
) -> Tuple[List[str], List[Tuple[str, str]], List[tuple], List[float]]:
    """Validated names, flip pairs, connection rules (name, name, (r, g, b) ints) and sigmas, and a
    known ``evaluator_type``; else a ValueError naming the dataset and the field."""
    where = f"keypoint dataset {name!r}"
    if isinstance(keypoint_names, str) or not isinstance(keypoint_names, Sequence):
        raise ValueError(f"{where}: keypoint_names must be a non-empty list of names, got {keypoint_names!r}")
    names = list(keypoint_names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{where}: keypoint_names must be a non-empty list of names, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: keypoint_names has repeated names: {names}")
    if not isinstance(flip_map, Sequence) or any(isinstance(pair, str) for pair in flip_map):
        raise ValueError(
            f"{where}: flip_map must be a list of (left, right) name pairs ([] for none), got {flip_map!r}"
        )
    pairs = [tuple(pair) for pair in flip_map]
    bad = [list(p) for p in pairs if len(p) != 2 or p[0] == p[1]]
    if bad:
        raise ValueError(f"{where}: flip_map entries must be pairs of two different names, got {bad}")
    paired = [n for p in pairs for n in p]
    if len(set(paired)) != len(paired):
        raise ValueError(f"{where}: flip_map names a keypoint in more than one pair: {[list(p) for p in pairs]}")
    try:
        flip_indices(names, pairs)
    except ValueError as e:
        raise ValueError(f"{where}: flip_map: {e}") from e
    rules = []
    for edge in skeleton or ():
        if len(edge) not in (2, 3) or edge[0] not in names or edge[1] not in names:
            raise ValueError(
                f"{where}: skeleton edges must be (name, name[, (r, g, b)]) of keypoint_names {names}, "
                f"got {list(edge)}{_index_edge_hint(edge, names)}"
            )
        colour = edge[2] if len(edge) == 3 else DEFAULT_EDGE_COLOUR
        if not is_colour(colour):
            raise ValueError(f"{where}: skeleton edge {list(edge[:2])}: colour must be 3 ints 0-255, got {colour!r}")
        rules.append((edge[0], edge[1], tuple(int(c) for c in colour)))
    if evaluator_type not in EVALUATOR_TYPES:
        raise ValueError(f"{where}: evaluator_type must be one of {list(EVALUATOR_TYPES)}, got {evaluator_type!r}")
    if oks_sigmas is not None and not (
        isinstance(oks_sigmas, (Sequence, np.ndarray))
        and all(isinstance(s, (int, float, np.number)) and not isinstance(s, bool) for s in oks_sigmas)
    ):
        raise ValueError(f"{where}: oks_sigmas must be {len(names)} numbers (or None), got {oks_sigmas!r}")
    sigmas = [DEFAULT_OKS_SIGMA] * len(names) if oks_sigmas is None else [float(s) for s in oks_sigmas]
    if len(sigmas) != len(names):
        raise ValueError(f"{where}: oks_sigmas has {len(sigmas)} values for {len(names)} keypoint_names")
    if not all(np.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"{where}: oks_sigmas must be positive numbers, got {sigmas}")
    return names, pairs, rules, sigmas


def _check_json_fields(where: str, coco: Any, keypoint_names: List[str], evaluator_type: str) -> None:
    """The checks of :func:`load_keypoint_json` before loading; a ConfigError prefixed with ``where``."""
    if not isinstance(coco, dict):
        raise ConfigError(f"{where}: expected a COCO json object at the top level, got {type(coco).__name__}")
    for key, fields in REQUIRED_JSON_FIELDS.items():
        if key == "annotations" and evaluator_type in AREA_EVALUATOR_TYPES:
            fields = {**fields, **AREA_FIELD}
        if not isinstance(coco.get(key), list):
            raise ConfigError(f"{where}: no top-level {key!r} list")
        for i, entry in enumerate(coco[key]):
            what = f"{key}[{i}]" + (f" (id {entry['id']})" if isinstance(entry, dict) and "id" in entry else "")
            missing = [f for f in fields if f not in entry] if isinstance(entry, dict) else list(fields)
            if missing:
                raise ConfigError(f"{where}: {what} is missing field(s) {missing}")
            check_json_fields(f"{where}: {what}", entry, fields)
    repeated = repeated_ids(image["id"] for image in coco["images"])
    if repeated:  # load_coco_json would keep one of the images and give it the annotations of all
        raise ConfigError(f"{where}: image ids must be unique, repeated: {', '.join(repeated[:5])}")
    categories = coco["categories"]
    if len(categories) != 1:
        names = [c["name"] for c in categories]
        raise ConfigError(f"{where}: expected one category (top-down keypoints of one class), got {names}")
    listed = categories[0].get("keypoints")
    if listed is not None and list(listed) != keypoint_names:
        raise ConfigError(
            f"{where}: the category's keypoints {list(listed)} are not the registered keypoint_names "
            f"{keypoint_names} (same names in the same order)"
        )
    for i, anno in enumerate(coco["annotations"]):  # load_coco_json: a KeyError naming neither file nor annotation
        if anno["category_id"] != categories[0]["id"]:
            raise ConfigError(
                f"{where}: annotations[{i}] (id {anno['id']}): category_id {anno['category_id']} is not the "
                f"category's id {categories[0]['id']}"
            )


def _evaluation_field_problem(anno: Dict[str, Any], evaluator_type: str) -> str:
    """What pycocotools' keypoint evaluation would read wrongly in a non-crowd annotation whose
    fields passed ``REQUIRED_JSON_FIELDS`` and keypoints ``annotations_to_arrays``: with
    ``evaluator_type`` "coco", an ``area`` <= 0 (OKS divides by it: AP 0 whatever the prediction;
    CrowdPose's evaluation and PCKh do not read it); a ``num_keypoints`` of 0 while keypoints are
    labelled (v > 0; the annotation is then ignored) or the reverse; "" when none."""
    count = anno["num_keypoints"]
    labelled = int(np.count_nonzero(np.asarray(anno["keypoints"], np.float64)[2::3] > 0))
    if evaluator_type in AREA_EVALUATOR_TYPES and anno["area"] <= 0:
        return f"field 'area' is {anno['area']!r}, expected a positive number (OKS divides by it)"
    if (count == 0) != (labelled == 0):
        return (
            f"field 'num_keypoints' is {count!r} but {labelled} keypoints are labelled (v > 0); COCO's "
            "num_keypoints is that count, and pycocotools ignores annotations whose num_keypoints is 0"
        )
    return ""


def load_keypoint_json(
    name: str, json_file: str, image_root: str, keypoint_names: Sequence[str], evaluator_type: str = "coco"
) -> List[Dict[str, Any]]:
    """Detectron2's ``load_coco_json`` of a keypoint file with the K ``keypoint_names``, checked so
    that bad input fails on the first ``DatasetCatalog.get`` (``train_net.setup``), not mid-training:
    before loading, the top-level ``images`` / ``annotations`` / ``categories`` lists, each entry's
    ``REQUIRED_JSON_FIELDS`` (and ``area`` for ``AREA_EVALUATOR_TYPES``), unique image ids and one
    category whose ``keypoints`` (when listed) are ``keypoint_names`` in order, and annotations of
    that category; after, every image file present, 3K keypoint values per annotation,
    ``annotations_to_arrays``' checks and the ``area`` / ``num_keypoints`` the evaluation of
    ``evaluator_type`` reads (:func:`_evaluation_field_problem`).

    Raises:
        ConfigError (a ValueError: ``train_net`` prints it as one ``error:`` line) naming the dataset,
        the file, the field (and the image and annotation id), or the missing files.
    """
    where = f"keypoint dataset {name!r} ({json_file})"
    if not os.path.isfile(json_file):
        raise ConfigError(f"{where}: the file does not exist")
    try:
        with open(json_file) as f:
            coco = json.load(f)  # read once more by load_coco_json (pycocotools takes a path)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid json: {e}") from e
    names = list(keypoint_names)
    _check_json_fields(where, coco, names, evaluator_type)
    del coco
    dicts = load_coco_json(json_file, image_root, name, extra_annotation_keys=["id", "area", "num_keypoints"])
    # A missing image would stop the evaluation after the whole training (the mapper skips unreadable
    # training images, counted in the log, but cannot skip a test image).
    missing = [os.path.relpath(d["file_name"], image_root) for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise ConfigError(
            f"{where}: {len(missing)} of {len(dicts)} image files do not exist under {image_root}: {listing(missing)}"
        )
    num_keypoints = len(names)
    for d in dicts:
        for anno in d.get("annotations", []):
            kps = anno.get("keypoints")
            if kps is not None and len(kps) != 3 * num_keypoints:
                raise ConfigError(
                    f"{where}: annotation {anno.get('id')} of {d['file_name']}: field 'keypoints' has "
                    f"{len(kps)} values, expected 3 x {num_keypoints} (the registered keypoint_names)"
                )
        try:
            annotations_to_arrays(d.get("annotations", []), num_keypoints, d["file_name"])
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from e
        for anno in d.get("annotations", []):
            problem = "" if anno.get("iscrowd", 0) else _evaluation_field_problem(anno, evaluator_type)
            if problem:
                raise ConfigError(f"{where}: annotation {anno['id']} of {d['file_name']}: {problem}")
    return dicts


def register_keypoint_dataset(
    name: str,
    json_file: str,
    image_root: str,
    keypoint_names: Sequence[str],
    flip_map: Sequence[Sequence[str]],
    skeleton: Optional[Sequence[Sequence[Any]]] = None,
    oks_sigmas: Optional[Sequence[float]] = None,
    evaluator_type: str = "coco",
) -> None:
    """Registers a COCO-format keypoint file (one category) as dataset ``name``, replacing an
    earlier registration of that name.

    Args:
        keypoint_names: the K keypoint names, in the file's keypoint order.
        flip_map: (left, right) name pairs a horizontal flip swaps; [] for none.
        skeleton: edges (name, name) or (name, name, (r, g, b)) for the visualiser, r, g, b
            ints 0-255 (default ``DEFAULT_EDGE_COLOUR``).
        oks_sigmas: (K,) OKS sigmas of the evaluation and OKS-NMS; None: ``DEFAULT_OKS_SIGMA``
            (the mean of COCO's 17) each.
        evaluator_type: one of ``EVALUATOR_TYPES``: "coco" (OKS AP), "crowdpose"
            (``depotr.evaluation.crowdpose``), "mpii_pckh" (PCKh; MPII's 16 keypoint names).
    Raises:
        ValueError naming the dataset and the field: inconsistent metadata (now); a file that
        :func:`load_keypoint_json` rejects (on the first ``DatasetCatalog.get``, which
        ``train_net.setup`` makes).
    """
    names, pairs, rules, sigmas = _check_metadata(name, keypoint_names, flip_map, skeleton, oks_sigmas, evaluator_type)
    warn_unpaired_mirrors(names, pairs, f"keypoint dataset {name!r}", "flip_map", "; add them to flip_map")
    unregister_dataset(name)
    DatasetCatalog.register(name, lambda: load_keypoint_json(name, json_file, image_root, names, evaluator_type))
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type=evaluator_type,
        keypoint_names=names,
        keypoint_flip_map=pairs,
        keypoint_connection_rules=rules,
        keypoint_oks_sigmas=sigmas,
        keypoints_from_dataset=True,
    )


def check_datasets_registered(cfg, keys: Sequence[str] = ("TRAIN", "TEST")) -> None:
    """A ConfigError naming the first dataset of ``DATASETS.<key>`` for ``keys`` that is not
    registered (a typo, with the nearest registered name, or a dataset of
    :func:`register_keypoint_dataset` whose registering script was not run), instead of
    ``DatasetCatalog.get``'s KeyError traceback listing every registered dataset."""
    registered = DatasetCatalog.list()
    for key in keys:
        for dataset in cfg.DATASETS.get(key):
            if dataset not in registered:
                near = difflib.get_close_matches(dataset, registered, n=1, cutoff=0.8)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ConfigError(
                    f"DATASETS.{key}: dataset {dataset!r} is not registered ({hint}your own keypoint files are "
                    "registered by your script calling register_keypoint_dataset, which then runs the command: "
                    "docs/datasets.md)"
                )


def check_keypoint_count(cfg, dataset: str, dicts: Sequence[Dict[str, Any]]) -> None:
    """A ConfigError naming ``dataset``, the first annotation of ``dicts`` whose keypoints are not
    3 x ``MODEL.DEPOTR.NUM_KEYPOINTS`` values and how to give the config that dataset's keypoints:
    a dataset registered otherwise than by :func:`register_keypoint_dataset` (Detectron2's
    ``register_coco_instances``) leaves the config at COCO's 17, and training stopped at its first
    batch with the data loader's traceback."""
    num_keypoints = cfg.MODEL.DEPOTR.NUM_KEYPOINTS
    for d in dicts:
        for anno in d.get("annotations", []):
            values = anno.get("keypoints")
            if values is not None and len(values) != 3 * num_keypoints:
                which = f"annotation {anno['id']}" if "id" in anno else "an annotation"
                raise ConfigError(
                    f"dataset {dataset!r}: {which} of {d['file_name']} has "
                    f"{len(values)} keypoint values, the config's MODEL.DEPOTR.NUM_KEYPOINTS {num_keypoints} needs "
                    f"{3 * num_keypoints}: register your keypoints with depotr.data.register_keypoint_dataset, which "
                    "gives the config their names, flip pairs and sigmas (docs/datasets.md), or set "
                    "MODEL.DEPOTR.NUM_KEYPOINTS, KEYPOINT_NAMES, KEYPOINT_FLIP_MAP and TEST.KEYPOINT_OKS_SIGMAS"
                )


def fill_keypoint_config(cfg) -> Optional[str]:
    """When ``MODEL.DEPOTR.KEYPOINT_NAMES`` is empty and the first dataset of ``DATASETS.TRAIN`` +
    ``DATASETS.TEST`` was registered here (``keypoints_from_dataset``), sets ``NUM_KEYPOINTS``,
    ``KEYPOINT_NAMES``, ``KEYPOINT_FLIP_MAP``, ``KEYPOINT_SKELETON`` and ``TEST.KEYPOINT_OKS_SIGMAS``
    from its metadata, in place (the run's config.yaml then holds all a demo needs). Returns what was
    done, for the log, or None. A ConfigError names a flip map, skeleton or sigmas that the config
    sets to other values than the dataset's (they were replaced without a word)."""
    model = cfg.MODEL.DEPOTR
    datasets = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    if model.KEYPOINT_NAMES or not datasets or datasets[0] not in DatasetCatalog.list():
        return None
    metadata = MetadataCatalog.get(datasets[0])
    if not metadata.get("keypoints_from_dataset", False):
        return None
    names = list(metadata.keypoint_names)
    flip_map = [list(pair) for pair in metadata.keypoint_flip_map]
    skeleton = [[a, b, [int(c) for c in colour]] for a, b, colour in metadata.get("keypoint_connection_rules", [])]
    config_sigmas = list(cfg.TEST.KEYPOINT_OKS_SIGMAS)
    # MPII's registrations carry no sigmas: the config's, or [] for the keypoint tables'.
    sigmas = list(metadata.get("keypoint_oks_sigmas", [])) or config_sigmas
    # A value the config sets would be replaced without a word (the evaluation's sigmas among them).
    config_skeleton = [[*edge[:2], list(edge[2]) if len(edge) == 3 else list(DEFAULT_EDGE_COLOUR)]
                       for edge in model.KEYPOINT_SKELETON]  # fmt: skip
    for key, set_value, same, value in (
        ("MODEL.DEPOTR.KEYPOINT_FLIP_MAP", model.KEYPOINT_FLIP_MAP,
         [list(pair) for pair in model.KEYPOINT_FLIP_MAP] == flip_map, flip_map),
        ("MODEL.DEPOTR.KEYPOINT_SKELETON", model.KEYPOINT_SKELETON, config_skeleton == skeleton, skeleton),
        ("TEST.KEYPOINT_OKS_SIGMAS", config_sigmas,
         len(config_sigmas) == len(sigmas) and np.allclose(config_sigmas, sigmas), sigmas),
    ):  # fmt: skip
        if len(set_value) and not same:
            raise ConfigError(
                f"{key} is {list(set_value)} but dataset {datasets[0]!r} (register_keypoint_dataset, which gives the "
                f"config its keypoints) has {value}: leave {key} unset, or register the dataset with it"
            )
    model.NUM_KEYPOINTS = len(names)
    model.KEYPOINT_NAMES = names
    model.KEYPOINT_FLIP_MAP = flip_map
    model.KEYPOINT_SKELETON = skeleton
    cfg.TEST.KEYPOINT_OKS_SIGMAS = sigmas
    return (
        f"Keypoints of dataset {datasets[0]!r}: MODEL.DEPOTR.NUM_KEYPOINTS {len(names)}, KEYPOINT_NAMES {names}, "
        f"KEYPOINT_FLIP_MAP {model.KEYPOINT_FLIP_MAP}, TEST.KEYPOINT_OKS_SIGMAS {cfg.TEST.KEYPOINT_OKS_SIGMAS}"
    )


def drawing_metadata(cfg) -> Dict[str, Any]:
    """``Visualizer`` metadata for a config's keypoints: COCO's when ``MODEL.DEPOTR.KEYPOINT_NAMES``
    is empty; else the config's names, flip pairs and ``KEYPOINT_SKELETON`` (edges without a colour
    in ``DEFAULT_EDGE_COLOUR``), or when that is empty the skeleton of the first registered dataset
    of ``DATASETS.TEST`` + ``DATASETS.TRAIN`` that has the same names (else none)."""
    names = list(cfg.MODEL.DEPOTR.KEYPOINT_NAMES)
    if not names:
        return coco_person_metadata()
    rules: List[tuple] = [
        (edge[0], edge[1], tuple(edge[2]) if len(edge) == 3 else DEFAULT_EDGE_COLOUR)
        for edge in cfg.MODEL.DEPOTR.KEYPOINT_SKELETON
    ]
    for dataset in () if rules else (*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN):
        if dataset in DatasetCatalog.list() and list(MetadataCatalog.get(dataset).get("keypoint_names", [])) == names:
            rules = list(MetadataCatalog.get(dataset).get("keypoint_connection_rules", []))
            break
    return person_metadata(names, cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP, rules)
