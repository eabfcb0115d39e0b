"""depotr.cli and the entry points that use it (train_net.py, demo/demo.py, tools/*.py): fast
--help, one override convention, one-line config errors, --random-weights, quiet warnings
(issue 23 items 3, 6, 7, 8)."""

import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch

import depotr.config as depotr_config
from depotr.cli import (
    CONFIG_ROOT_KEYS,
    ConfigError,
    config_overrides,
    parse_command_line,
    quiet_third_party_warnings,
    run_main,
    training_argument_parser,
)
from depotr.config import load_depotr_config
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES
from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
ENTRY_POINTS = {
    "train_net": "train_net.py",
    "demo": os.path.join("demo", "demo.py"),
    "export": os.path.join("tools", "export_model.py"),
    "visualize": os.path.join("tools", "visualize_predictions.py"),
    "analyze": os.path.join("tools", "analyze_results.py"),
    "evaluate_mpii": os.path.join("tools", "evaluate_mpii.py"),
    "draw_photos": os.path.join("tools", "draw_photos.py"),
}


def _main(name: str):
    module = load_script(ENTRY_POINTS[name])
    return module.cli if name == "train_net" else module.main


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_imports_neither_torch_nor_detectron2(name):
    """The friction: --help took 4.6 s (torch and Detectron2 imported first). A `python X --help`
    run that reports which heavy modules were imported by the time it exited."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{ENTRY_POINTS[name]!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({ENTRY_POINTS[name]!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('HEAVY', sorted(m for m in ('torch', 'detectron2') if m in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "usage:" in completed.stdout and "--config-file" in completed.stdout
    assert "HEAVY []" in completed.stdout


SCRIPTS_WITH_EXAMPLES = sorted(set(ENTRY_POINTS.values()) - {ENTRY_POINTS["evaluate_mpii"]}) + [
    os.path.join("tools", "make_subset.py")
]


@pytest.mark.parametrize("script", SCRIPTS_WITH_EXAMPLES)
def test_help_shows_the_example_commands_line_by_line(script):
    """The friction: the module docstring is --help's description, and in a plain (not raw) string
    the shell line continuation `\\` + newline is an escape that joins the lines, so --help printed
    each example command as one line with runs of spaces and no backslashes."""
    source = open(os.path.join(REPO, script)).read()
    continued = [line for line in source.split('"""', 2)[1].splitlines() if line.endswith(" \\")]
    completed = subprocess.run(
        [sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert continued, f"{script}'s docstring has no example command continued with ` \\`"
    assert [line for line in continued if line not in completed.stdout.splitlines()] == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--input", "a.jpg", "b.jpg", "--output", "out", "MODEL.WEIGHTS", "w.pth", "TEST.FLIP", "True"],
        ["--output", "out", "--input", "a.jpg", "b.jpg", "MODEL.WEIGHTS", "w.pth", "TEST.FLIP", "True"],
        ["--input", "a.jpg", "b.jpg", "--output", "out", "--opts", "MODEL.WEIGHTS", "w.pth", "TEST.FLIP", "True"],
        ["--input", "a.jpg", "b.jpg", "--output", "out", "MODEL.WEIGHTS", "w.pth", "--opts", "TEST.FLIP", "True"],
    ],
    ids=["bare", "bare-after-input", "opts", "both"],
)
def test_overrides_bare_or_after_opts_are_the_same(argv):
    parser = load_script(ENTRY_POINTS["demo"]).get_parser()
    args = parse_command_line(parser, ["--config-file", "c.yaml", *argv])
    assert args.input == ["a.jpg", "b.jpg"] and args.output == "out"  # --input did not swallow them
    assert config_overrides(args) == ["MODEL.WEIGHTS", "w.pth", "TEST.FLIP", "True"]


def test_training_parser_has_detectron2s_options_and_opts():
    from detectron2.engine import default_argument_parser

    ours = training_argument_parser("").parse_args(["--config-file", "c.yaml", "SEED", "1"])
    theirs = default_argument_parser().parse_args(["--config-file", "c.yaml", "SEED", "1"])
    for key, value in vars(theirs).items():
        assert getattr(ours, key) == value, key
    args = parse_command_line(training_argument_parser(""), ["--eval-only", "--opts", "SEED", "1"])
    assert args.eval_only and config_overrides(args) == ["SEED", "1"]


def test_config_root_keys_are_the_configs():
    # Every root key of this Detectron2's config starts bare overrides; the set also holds the
    # keys of the other supported Detectron2 (v0.6 lacks main's FLOAT32_PRECISION), nothing else.
    roots = set(load_depotr_config(INSTANT_CONFIG).keys())
    assert roots <= CONFIG_ROOT_KEYS and CONFIG_ROOT_KEYS - roots <= {"FLOAT32_PRECISION"}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_config_typo_is_one_line_and_status_2_in_every_entry_point(name, tmp_path, capsys):
    (tmp_path / "x.jpg").write_bytes(b"")  # the demo checks that its inputs exist first
    argv = {
        "train_net": [],
        "demo": ["--input", str(tmp_path / "x.jpg"), "--output", str(tmp_path / "out")],
        "export": ["--output", str(tmp_path / "out")],
        "visualize": ["--output", str(tmp_path / "out")],
        "analyze": [],
        "evaluate_mpii": ["--mean-pose-baseline"],
        "draw_photos": ["--output", str(tmp_path / "photos.png")],
    }[name]
    status = run_main(_main(name), ["--config-file", INSTANT_CONFIG, *argv, "TEST.FLIPP", "True"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == "error: unknown config key TEST.FLIPP in the overrides; did you mean TEST.FLIP?\n"


@pytest.mark.parametrize("name", ["train_net", "export", "visualize"])
def test_config_path_mistakes_in_the_tools(name, tmp_path, capsys):
    argv = ["--output", str(tmp_path / "out")] if name != "train_net" else []
    yml = INSTANT_CONFIG[: -len(".yaml")] + ".yml"
    assert run_main(_main(name), ["--config-file", yml, *argv]) == 2
    assert (
        capsys.readouterr().err
        == f"error: config file {yml} does not exist, but {INSTANT_CONFIG} does (.yml for .yaml?)\n"
    )
    assert run_main(_main(name), ["--config-file", INSTANT_CONFIG, *argv, "SEED"]) == 2
    assert "KEY VALUE pairs; got 1 values: SEED" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["export", "visualize"])
def test_custom_keypoints_against_the_configs_coco_datasets_are_one_line(name, tmp_path, capsys):
    """The friction: keypoints of the config that disagree with its datasets' (or lack OKS sigmas)
    were a ValueError traceback from the keypoint tables in the tools."""
    names = ["head", "l_hand", "r_hand", "l_foot", "r_foot"]
    opts = ["MODEL.DEPOTR.NUM_KEYPOINTS", "5", "MODEL.DEPOTR.KEYPOINT_NAMES", str(names)]
    opts += ["MODEL.DEPOTR.KEYPOINT_FLIP_MAP", "[['l_hand', 'r_hand'], ['l_foot', 'r_foot']]"]
    argv = ["--config-file", INSTANT_CONFIG, "--output", str(tmp_path / "out"), "--random-weights", *opts]
    assert run_main(_main(name), argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: keypoints ['l_hand', 'r_hand', 'l_foot', 'r_foot'] have no OKS sigma in the keypoint table: set "
        "TEST.KEYPOINT_OKS_SIGMAS"
    )
    assert run_main(_main(name), [*argv, "TEST.KEYPOINT_OKS_SIGMAS", "[0.05, 0.05, 0.05, 0.05, 0.05]"]) == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .startswith(
            f"error: dataset 'synthetic_persons_train' has keypoint_names {list(COCO_PERSON_KEYPOINT_NAMES)}, "
            "the config's keypoints "
        )
    )


@pytest.mark.parametrize("name", ["train_net", "visualize", "export"])
def test_empty_weights_are_refused_unless_random_weights(name, tmp_path, capsys):
    """The friction: the tools ran and exited 0 on random weights when MODEL.WEIGHTS was empty."""
    argv = ["--eval-only"] if name == "train_net" else ["--output", str(tmp_path / "out")]
    assert run_main(_main(name), ["--config-file", INSTANT_CONFIG, *argv, "MODEL.WEIGHTS", ""]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MODEL.WEIGHTS is empty") and "--random-weights" in err
    missing = str(tmp_path / "missing.pth")
    assert run_main(_main(name), ["--config-file", INSTANT_CONFIG, *argv, "MODEL.WEIGHTS", missing]) == 2
    assert capsys.readouterr().err == f"error: MODEL.WEIGHTS {missing}: no such checkpoint file\n"


def test_training_from_a_missing_checkpoint_is_refused_before_it_starts(tmp_path, capsys):
    missing = str(tmp_path / "missing.pth")
    argv = ["--config-file", INSTANT_CONFIG, "OUTPUT_DIR", str(tmp_path / "run"), "MODEL.WEIGHTS", missing]
    assert run_main(_main("train_net"), argv) == 2
    assert capsys.readouterr().err == f"error: MODEL.WEIGHTS {missing}: no such checkpoint file\n"
    assert not (tmp_path / "run").exists()


def test_a_config_error_from_the_command_line_has_no_traceback_and_no_warnings(tmp_path):
    """As users run it: stderr is the one error line, without the torch.jit.script
    FutureWarnings that torch and Detectron2's imports printed."""
    completed = subprocess.run(
        [sys.executable, ENTRY_POINTS["export"], "--config-file", "configs/nothing.yaml", "--output", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr == "error: config file configs/nothing.yaml does not exist\n"


def test_cpu_is_said_once_where_a_model_runs_and_not_by_the_config(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(depotr_config, "_device_logged", False)
    with caplog.at_level(logging.INFO, logger="depotr"):
        cfg = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cuda"])
        assert cfg.MODEL.DEVICE == "cpu"
        assert caplog.records == []  # the analysis loads a config and no model: nothing to say
        depotr_config.log_device(cfg.MODEL.DEVICE)
        depotr_config.log_device(cfg.MODEL.DEVICE)
    assert [r.getMessage() for r in caplog.records] == ["running on CPU (CUDA is not available)"]


class _RefusingDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise ConfigError(f"image {index}.jpg is 64x64 (width x height) but its dataset entry says 80x48")


def test_a_config_error_in_a_data_loader_worker_is_its_one_line(capsys):
    """The friction: a test image of the wrong size (a ConfigError of the mapper) in a worker came
    back as 'error: Caught ConfigError in DataLoader worker process 0.' and the worker's traceback."""

    def main(argv):
        next(iter(torch.utils.data.DataLoader(_RefusingDataset(), num_workers=1)))

    assert run_main(main, []) == 2
    assert capsys.readouterr().err == (
        "error: image 0.jpg is 64x64 (width x height) but its dataset entry says 80x48\n"
    )


def test_the_exports_torch_jit_deprecations_are_quieted_and_other_warnings_kept(tmp_path):
    """tools/export_model.py printed four torch.jit FutureWarnings (trace, trace_method, save,
    load) on every run; a warning of ours (or another library's) still shows."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        traced = torch.jit.trace(torch.nn.Linear(2, 2), torch.ones(1, 2))
        torch.jit.save(traced, str(tmp_path / "m.ts"))
        torch.jit.load(str(tmp_path / "m.ts"))
        warnings.warn("a warning of ours", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of ours"]


def test_ctrl_c_outside_a_commands_own_handling_is_one_line_and_status_130(capsys):
    """Ctrl-C while the demo loaded its model printed a KeyboardInterrupt traceback."""

    def main(argv):
        raise KeyboardInterrupt

    assert run_main(main, []) == 130
    assert capsys.readouterr().err == "stopped (Ctrl-C)\n"
