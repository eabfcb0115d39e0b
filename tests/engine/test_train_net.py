"""train_net.py end to end: a 30-iteration training run with evaluation, as a user runs it; its
log."""

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import yaml

from detectron2.data import DatasetCatalog

import train_net
from depotr.cli import run_main
from depotr.data import filter_person_annotations

from .conftest import INSTANT_CONFIG, REPO, instant_args


def test_depotr_records_reach_log_txt_and_the_console(tmp_path, capsys):
    output_dir = tmp_path / "run"
    args = instant_args(
        str(output_dir),
        str(tmp_path / "synthetic"),
        "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES",
        "3",
        "DATASETS.SYNTHETIC.NUM_VAL_IMAGES",
        "2",
    )
    train_net.setup(args)  # generates the tiny dataset
    filter_person_annotations(DatasetCatalog.get("synthetic_persons_train"))
    logging.getLogger("depotr.engine.trainer").debug("a debug record")
    log = (output_dir / "log.txt").read_text()
    console = capsys.readouterr().out
    for text in (
        "Generated 3 synthetic train images",
        "Generated 2 synthetic val images",
        "Person filter: kept 3 images",
        "a debug record",
    ):
        assert text in log, text
        assert text in console, text
    assert "depotr.data.synthetic_cache" in log and "Rank of current process" in log  # and Detectron2's own


@pytest.mark.slow
def test_train_and_evaluate_through_train_net(tmp_path, synthetic_root):
    output_dir = tmp_path / "run"
    command = [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        INSTANT_CONFIG,
        "OUTPUT_DIR",
        str(output_dir),
        "DATASETS.SYNTHETIC.ROOT",
        synthetic_root,
    ]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    assert (output_dir / "model_final.pth").is_file()
    assert (output_dir / "last_checkpoint").read_text().strip() == "model_final.pth"
    metrics = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(v) for v in losses)
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 29
    evaluation = [m for m in metrics if "keypoints/AP" in m]
    assert evaluation, "no evaluation result in metrics.json"
    assert 0.0 <= evaluation[-1]["keypoints/AP"] <= 100.0
    results = json.loads(
        (output_dir / "inference" / "synthetic_persons_val" / "coco_instances_results.json").read_text()
    )
    assert results and all(len(r["keypoints"]) == 51 for r in results)
    assert "Evaluation results for keypoints" in completed.stdout + completed.stderr


def test_cli_loads_the_config_once(tmp_path, monkeypatch):
    """The config cli() loaded and checked is the one setup() builds on: not loaded a second time."""
    import depotr.config
    import depotr.engine

    loads, launched = [], []
    load = depotr.config.load_depotr_config
    monkeypatch.setattr(depotr.config, "load_depotr_config", lambda *a: loads.append(a) or load(*a))
    monkeypatch.setattr(depotr.engine, "launch", lambda main, *a, args, **k: launched.append(args))
    argv = ["--config-file", INSTANT_CONFIG, "OUTPUT_DIR", str(tmp_path / "run")]
    argv += ["DATASETS.SYNTHETIC.ROOT", str(tmp_path / "synthetic"), "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES", "2"]
    assert train_net.cli(argv + ["DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1"]) == 0
    cfg = train_net.setup(*launched[0])
    assert len(loads) == 1 and cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES == 2 and cfg.is_frozen()


def test_resume_checks_the_checkpoint_it_will_load_before_any_work(tmp_path, monkeypatch, capsys):
    """The friction: --resume skipped the MODEL.WEIGHTS check, so with no last_checkpoint a missing
    file was fvcore's AssertionError after the run lock and the data; so was a last_checkpoint
    naming a deleted file."""
    import depotr.engine

    launched = []
    monkeypatch.setattr(depotr.engine, "launch", lambda main, *a, args, **k: launched.append(args))
    output_dir, missing = tmp_path / "run", tmp_path / "nope.pth"
    argv = ["--config-file", INSTANT_CONFIG, "--resume", "OUTPUT_DIR", str(output_dir), "MODEL.WEIGHTS", str(missing)]
    assert run_main(train_net.cli, argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: MODEL.WEIGHTS {missing}: no such checkpoint file"
    output_dir.mkdir()
    (output_dir / "last_checkpoint").write_text("model_0000009.pth")
    assert run_main(train_net.cli, argv) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith(f"error: {output_dir / 'last_checkpoint'} names the checkpoint ")
    assert f"{output_dir / 'model_0000009.pth'}, which does not exist" in last_line
    (output_dir / "model_0000009.pth").write_bytes(b"")  # resumed from: MODEL.WEIGHTS is not loaded
    assert run_main(train_net.cli, argv) == 0 and len(launched) == 1


def test_eval_only_with_a_checkpoint_of_another_config_is_one_error_line(tmp_path, capsys):
    """The friction: a clear ValueError, but as a traceback and status 1 where the docs promise
    "error: ..." and status 2."""
    from detectron2.modeling import build_model

    from depotr.config import load_depotr_config
    from depotr.engine import DePOTRCheckpointer

    other = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.DEPOTR.HIDDEN_DIM", "32"])
    DePOTRCheckpointer(build_model(other), str(tmp_path)).save("other")
    argv = ["--config-file", INSTANT_CONFIG, "--eval-only", "OUTPUT_DIR", str(tmp_path / "eval")]
    argv += ["DATASETS.SYNTHETIC.ROOT", str(tmp_path / "synthetic"), "MODEL.WEIGHTS", str(tmp_path / "other.pth")]
    argv += ["DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES", "1", "DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1"]
    assert run_main(train_net.cli, argv) == 2  # was: the ValueError raised through
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith(f"error: checkpoint {tmp_path / 'other.pth'} does not fit the model")


@pytest.mark.parametrize("mode", [[], ["--eval-only"]])
def test_a_new_run_from_a_checkpoint_of_another_config_writes_nothing(tmp_path, capsys, mode):
    """The friction: the refusal came after default_setup had written config.yaml and log.txt (and
    the data had been generated), so the new folder looked like a run that had started."""
    from detectron2.modeling import build_model

    from depotr.config import load_depotr_config
    from depotr.engine import DePOTRCheckpointer

    other = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.DEPOTR.HIDDEN_DIM", "32"])
    DePOTRCheckpointer(build_model(other), str(tmp_path)).save("other")
    output_dir = tmp_path / "run"
    argv = ["--config-file", INSTANT_CONFIG, *mode, "OUTPUT_DIR", str(output_dir), "DATASETS.SYNTHETIC.ROOT"]
    argv += [str(tmp_path / "synthetic"), "MODEL.WEIGHTS", str(tmp_path / "other.pth")]
    assert run_main(train_net.cli, argv) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith(f"error: checkpoint {tmp_path / 'other.pth'} does not fit the model")
    assert not (output_dir / "config.yaml").exists() and not (output_dir / "log.txt").exists()
    assert not (tmp_path / "synthetic").exists()


def test_a_detector_config_as_the_pose_config_is_one_error_line(tmp_path, capsys):
    """A Detectron2 detector's config given as --config-file is refused before any process starts
    (it built a GeneralizedRCNN and failed later, on the synthetic data's keypoints)."""
    from depotr.modeling.person_detector import resolve_model_zoo_path

    config = resolve_model_zoo_path("model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml")
    argv = ["--config-file", config, "OUTPUT_DIR", str(tmp_path / "run"), "MODEL.WEIGHTS", ""]
    assert run_main(train_net.cli, argv) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith("error: MODEL.META_ARCHITECTURE is 'GeneralizedRCNN', not DePOTR's pose model")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER must be >= 1 to train (or SOLVER.MAX_EPOCHS > 0), got 0"),
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH must be a positive multiple of the 1 training"),
        (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD must be >= 1, got 0"),
        (
            ["SOLVER.MAX_EPOCHS", "3", "SOLVER.MAX_ITER", "5"],
            "SOLVER.MAX_ITER is set in the overrides, but SOLVER.MAX_EPOCHS=3",
        ),
    ],
)
def test_a_schedule_that_cannot_train_is_one_error_line(tmp_path, capsys, overrides, message):
    """The friction: MAX_ITER 0, IMS_PER_BATCH 0 and CHECKPOINT_PERIOD 0 ended in ZeroDivisionError
    tracebacks (the warm-up fraction, the sampler's batch, the periodic checkpointer's modulo)."""
    argv = ["--config-file", INSTANT_CONFIG, "--random-weights", "OUTPUT_DIR", str(tmp_path / "run")]
    argv += ["DATASETS.SYNTHETIC.ROOT", str(tmp_path / "synthetic"), "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES", "2"]
    argv += ["DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1", "SOLVER.IMS_PER_BATCH", "2", *overrides]
    assert run_main(train_net.cli, argv) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {message}")


@pytest.mark.parametrize("mode", ["--resume", "--eval-only"])
def test_a_checkpoint_of_another_config_leaves_the_runs_config_yaml_alone(tmp_path, capsys, mode):
    """The friction: Detectron2's default_setup overwrote OUTPUT_DIR/config.yaml with the new config
    before the checkpoint of the run's own config failed to load into its model, so the run's
    folder no longer said which config its checkpoints are of."""
    from detectron2.modeling import build_model

    from depotr.config import load_depotr_config
    from depotr.engine import DePOTRCheckpointer

    output_dir = tmp_path / "run"
    output_dir.mkdir()
    (output_dir / "config.yaml").write_text("the run's config\n")
    run = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.DEPOTR.HIDDEN_DIM", "32"])
    DePOTRCheckpointer(build_model(run), str(output_dir)).save("model_final")  # and last_checkpoint
    argv = ["--config-file", INSTANT_CONFIG, mode, "OUTPUT_DIR", str(output_dir)]
    argv += [
        "DATASETS.SYNTHETIC.ROOT",
        str(tmp_path / "synthetic"),
        "MODEL.WEIGHTS",
        str(output_dir / "model_final.pth"),
    ]
    assert run_main(train_net.cli, argv) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith(f"error: checkpoint {output_dir / 'model_final.pth'} does not fit the model")
    assert (output_dir / "config.yaml").read_text() == "the run's config\n"
    assert not (output_dir / "log.txt").exists() and not (tmp_path / "synthetic").exists()


def _tiny_argv(tmp_path, *opts):
    """train_net.py arguments for the instant config on 2 + 1 generated images, MAX_ITER 2."""
    argv = ["--config-file", INSTANT_CONFIG, *opts, "OUTPUT_DIR", str(tmp_path / "run")]
    argv += ["DATASETS.SYNTHETIC.ROOT", str(tmp_path / "synthetic"), "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES", "2"]
    return argv + ["DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1"]


def test_a_second_run_in_a_trained_folder_without_resume_is_refused_and_changes_nothing(tmp_path, capsys):
    """The friction: train_net.py run twice with one OUTPUT_DIR, the second time without --resume,
    appended the second run's rows to the first's metrics.json, which then read as one run."""
    output_dir = tmp_path / "run"
    argv = _tiny_argv(tmp_path, "DATASETS.TEST", "()")
    assert run_main(train_net.cli, argv) == 0
    files = {p.name: p.read_bytes() for p in output_dir.iterdir() if p.is_file() and p.name != "run.lock"}
    assert files["metrics.json"] and files["last_checkpoint"] == b"model_final.pth"
    capsys.readouterr()
    assert run_main(train_net.cli, argv) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith(f"error: OUTPUT_DIR {output_dir} holds an earlier training run (")
    assert f"pass --resume to continue it from the checkpoint {output_dir / 'last_checkpoint'} names" in last_line
    assert {p.name: p.read_bytes() for p in output_dir.iterdir() if p.is_file()} == files


def test_a_bad_precomputed_boxes_file_is_one_error_line_before_training(tmp_path, capsys):
    """The friction: DATASETS.PRECOMPUTED_BOXES was read only by the test loader, after the whole
    training, and its errors were ValueError tracebacks."""
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 0, "category_id": 1, "bbox": [1, 2, 3], "score": 0.9}]))
    precomputed = ("MODEL.DEPOTR.TEST_BOX_SOURCE", "precomputed", "DATASETS.PRECOMPUTED_BOXES", f'("{boxes}",)')
    argv = _tiny_argv(tmp_path, *precomputed)
    capsys.readouterr()
    assert run_main(train_net.cli, argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"error: precomputed boxes file {boxes}, detection 0: field 'bbox' must be 4 finite numbers [x, y, w, h], "
        "got [1, 2, 3]"
    )
    assert not list((tmp_path / "run").glob("*.pth"))  # refused before the first iteration


def test_a_head_setting_the_model_cannot_build_is_one_error_line(tmp_path, capsys):
    """The friction: the keypoint branches' config checks were ValueError tracebacks of the model build."""
    argv = _tiny_argv(tmp_path, "MODEL.DEPOTR.HEATMAP.DECODER", "bilinear")
    capsys.readouterr()
    assert run_main(train_net.cli, argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: MODEL.DEPOTR.HEATMAP.DECODER must be 'deconv' or 'dot_product', got 'bilinear'"
    )


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("GENERATOR_VERSION", "5", "DATASETS.SYNTHETIC.GENERATOR_VERSION: unknown synthetic generator version 5"),
        ("SEED", "-1", "synthetic dataset: DATASETS.SYNTHETIC.SEED must be an integer >= 0, got -1"),
    ],
)
def test_a_bad_synthetic_spec_is_one_error_line_naming_the_key(tmp_path, capsys, key, value, message):
    """The friction: ValueError tracebacks from the synthetic cache, naming no config key."""
    capsys.readouterr()
    assert run_main(train_net.cli, _tiny_argv(tmp_path, f"DATASETS.SYNTHETIC.{key}", value)) == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def _save_instant_checkpoint(path):
    from detectron2.modeling import build_model

    from depotr.config import load_depotr_config
    from depotr.engine import DePOTRCheckpointer

    model = build_model(load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu"]))
    DePOTRCheckpointer(model, str(path.parent)).save(path.stem)


def test_eval_only_reads_the_checkpoint_once(tmp_path, monkeypatch):
    """The friction: setup() loaded the checkpoint whole into a second model to check that it fits
    before config.yaml is overwritten, and main() loaded it again; the check now reads names and
    shapes only (the file memory-mapped into a model on the meta device)."""
    import torch

    weights = tmp_path / "weights" / "model.pth"
    weights.parent.mkdir()
    _save_instant_checkpoint(weights)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("an earlier evaluation's config\n")
    loads, load = [], torch.load  # (file, memory-mapped)
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append((str(f), k.get("mmap"))) or load(f, *a, **k))
    assert run_main(train_net.cli, _tiny_argv(tmp_path, "--eval-only", "MODEL.WEIGHTS", str(weights))) == 0
    assert [mmap for f, mmap in loads if f == str(weights)] == [True, None]


def test_resume_from_a_truncated_checkpoint_names_the_earlier_complete_one(tmp_path, capsys):
    """The friction: train_net.py's fit check loaded the last checkpoint itself, so a truncated one
    was "cannot read checkpoint" without the hint of DePOTRCheckpointer.resume_or_load."""
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    _save_instant_checkpoint(output_dir / "model_0000000.pth")
    _save_instant_checkpoint(output_dir / "model_0000001.pth")  # and last_checkpoint
    last = output_dir / "model_0000001.pth"
    last.write_bytes(last.read_bytes()[:200])  # a disk that filled up
    (output_dir / "config.yaml").write_text("the run's config\n")
    assert run_main(train_net.cli, _tiny_argv(tmp_path, "--resume")) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith(f"error: cannot read checkpoint {last}")
    assert f"The newest complete earlier checkpoint is {output_dir / 'model_0000000.pth'}" in last_line
    assert (output_dir / "config.yaml").read_text() == "the run's config\n"


def test_resume_with_a_changed_config_warns_with_the_changed_keys(tmp_path):
    """The friction: `make main` (--resume) after editing the config silently continued the old run
    under the new values; the changed keys now go to the log."""
    argv = _tiny_argv(tmp_path, "--resume", "DATASETS.TEST", "()", "SOLVER.BASE_LR", "0.25")
    assert run_main(train_net.cli, argv) == 0
    log = tmp_path / "run" / "log.txt"
    assert run_main(train_net.cli, argv) == 0  # the same config: re-runs the finished run, no warning
    assert "differs from the run's config.yaml" not in log.read_text()
    assert run_main(train_net.cli, [*argv, "SOLVER.BASE_LR", "0.5", "SOLVER.MAX_ITER", "3"]) == 0
    warning = next(line for line in log.read_text().splitlines() if "differs from the run's config.yaml" in line)
    assert "in 2 key(s): SOLVER.BASE_LR: 0.25 -> 0.5; SOLVER.MAX_ITER: 2 -> 3." in warning


def test_config_changes_lists_changed_added_and_removed_keys(tmp_path):
    from depotr.engine.run_dir import config_changes, saved_config

    assert saved_config(str(tmp_path)) is None and config_changes(None, "A: 1\n") == []  # no config.yaml
    (tmp_path / "config.yaml").write_text("not a config\n")
    assert saved_config(str(tmp_path)) is None
    (tmp_path / "config.yaml").write_text("A: 1\nB: {C: [1, 2], D: x}\n")
    saved = saved_config(str(tmp_path))
    assert config_changes(saved, "A: 1\nB: {C: [1, 2], D: x}\n") == []
    assert config_changes(saved, "A: 2\nB: {C: [1, 3], E: y}\n") == [
        "A: 1 -> 2",
        "B.C: [1, 2] -> [1, 3]",
        "B.D: x -> (none)",
        "B.E: (none) -> y",
    ]


def test_config_yaml_of_an_epoch_schedule_holds_the_iteration_counts_the_run_uses(tmp_path):
    """The friction: with SOLVER.MAX_EPOCHS > 0 (the COCO configs) config.yaml kept the config's
    MAX_ITER / WARMUP_ITERS, written before the epochs were converted; --resume compares with it
    and warns of no change."""
    output_dir = tmp_path / "run"
    opts = ["DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES", "6", "DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1"]
    opts += ["SOLVER.MAX_EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "1.0"]  # IMS_PER_BATCH 2: 3 iterations an epoch
    cfg = train_net.setup(instant_args(str(output_dir), str(tmp_path / "synthetic"), *opts))
    saved = yaml.safe_load((output_dir / "config.yaml").read_text())["SOLVER"]
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS) == (6, 3)  # not the config's 30 and 5
    assert (saved["MAX_ITER"], saved["WARMUP_ITERS"], saved["MAX_EPOCHS"]) == (6, 3, 2)
    train_net.setup(instant_args(str(output_dir), str(tmp_path / "synthetic"), *opts, extra=("--resume",)))
    assert "differs from the run's config.yaml" not in (output_dir / "log.txt").read_text()


def test_eval_only_in_a_run_folder_keeps_the_runs_config_yaml(tmp_path):
    """The friction: --eval-only in a training run's folder replaced its config.yaml (Detectron2's
    default_setup writes it), so the next --resume compared with, and took its seed from, the
    evaluation's config: an epoch run then warned 'MAX_ITER: 30 -> 6'."""
    output_dir, synthetic = tmp_path / "run", str(tmp_path / "synthetic")
    opts = ["DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES", "6", "DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1"]
    opts += ["SOLVER.MAX_EPOCHS", "2", "SEED", "5"]
    train_net.setup(instant_args(str(output_dir), synthetic, *opts))
    run_yaml = (output_dir / "config.yaml").read_bytes()
    cfg = train_net.setup(instant_args(str(output_dir), synthetic, *opts[:-1], "9", extra=("--eval-only",)))
    assert cfg.SEED == 9 and (output_dir / "config.yaml").read_bytes() == run_yaml
    assert not [p for p in os.listdir(output_dir) if p.endswith(".tmp")]
    train_net.setup(instant_args(str(output_dir), synthetic, *opts, extra=("--resume",)))
    assert "differs from the run's config.yaml" not in (output_dir / "log.txt").read_text()


def test_a_random_seed_is_recorded_in_config_yaml_and_resume_continues_with_it(tmp_path, monkeypatch):
    """The friction: with SEED -1 (Detectron2's default, the COCO configs') --resume drew a new
    seed, so the resumed run's sampler restarted another permutation mid-epoch and augmented every
    sample under another seed: not the continuation docs/resume.md promises."""
    seeds = []
    monkeypatch.setattr(train_net, "main", lambda args, cfg: seeds.append(cfg.SEED))
    argv = _tiny_argv(tmp_path, "--resume", "DATASETS.TEST", "()", "SEED", "-1")
    assert run_main(train_net.cli, argv) == 0 and run_main(train_net.cli, argv) == 0
    assert seeds[0] >= 0 and seeds[1] >= 0 and seeds[0] != seeds[1]  # no config.yaml yet: a new one each time
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(f"SEED: {seeds[0]}\n")
    assert run_main(train_net.cli, argv) == 0  # --resume: the run's recorded seed
    assert run_main(train_net.cli, _tiny_argv(tmp_path, "SEED", "-1")) == 0  # a new run: a new seed
    assert seeds[2] == seeds[0] and seeds[3] not in (seeds[0], -1)
    assert run_main(train_net.cli, _tiny_argv(tmp_path, "--resume", "SEED", "7")) == 0  # a set seed stays
    assert seeds[4] == 7


def test_eval_only_resume_warns_that_it_evaluates_the_last_checkpoint_not_model_weights(tmp_path, monkeypatch, caplog):
    """The friction: `--eval-only --resume MODEL.WEIGHTS run/model_0000009.pth` evaluated the run's
    model_final.pth (Detectron2's resume_or_load prefers last_checkpoint), said only by fvcore's
    "Loading from" line."""
    import depotr.engine

    monkeypatch.setattr(depotr.engine, "launch", lambda main, *a, args, **k: None)
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    for name in ("model_0000009.pth", "model_final.pth"):
        (output_dir / name).write_bytes(b"")
    (output_dir / "last_checkpoint").write_text("model_final.pth")
    argv = ["--config-file", INSTANT_CONFIG, "--eval-only", "--resume", "OUTPUT_DIR", str(output_dir)]
    for weights, warned in (("model_0000009.pth", True), ("model_final.pth", False)):
        caplog.clear()
        assert run_main(train_net.cli, [*argv, "MODEL.WEIGHTS", str(output_dir / weights)]) == 0
        warnings = [r.getMessage() for r in caplog.records if r.name == "depotr" and r.levelname == "WARNING"]
        expected = (
            f"--eval-only --resume evaluates {output_dir / 'model_final.pth'}, the checkpoint "
            f"{output_dir}/last_checkpoint names, not MODEL.WEIGHTS {output_dir / weights}: drop --resume to "
            "evaluate MODEL.WEIGHTS"
        )
        assert warnings == ([expected] if warned else [])
