"""load_depotr_config: yaml + overrides on top of Detectron2's and DePOTR's defaults."""

import os

import pytest
import torch

from depotr.cli import ConfigError
from depotr.config import load_depotr_config

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "depotr_r50.yaml")


def test_yaml_and_overrides_are_applied():
    cfg = load_depotr_config(CONFIG, ["MODEL.DEPOTR.ENC_LAYERS", "2", "INPUT.CROP_SIZE", "(128, 96)"])
    assert cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator"
    assert cfg.MODEL.DEPOTR.HEAD == "regression"
    assert cfg.MODEL.DEPOTR.ENC_LAYERS == 2
    assert tuple(cfg.INPUT.CROP_SIZE) == (128, 96)


def test_unknown_override_key_raises():
    with pytest.raises(ConfigError, match="unknown config key MODEL.DEPOTR.ENC_LAYER in the overrides"):
        load_depotr_config(CONFIG, ["MODEL.DEPOTR.ENC_LAYER", "2"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback applies only without CUDA")
def test_cuda_device_falls_back_to_cpu_without_cuda():
    assert load_depotr_config(CONFIG, ["MODEL.DEVICE", "cuda"]).MODEL.DEVICE == "cpu"
    assert load_depotr_config(CONFIG, ["MODEL.DEVICE", "cpu"]).MODEL.DEVICE == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback applies only without CUDA")
def test_amp_on_cpu_trains_the_branch_in_bfloat16():
    from detectron2.modeling import build_model

    import depotr.modeling  # noqa: F401  (registers the meta-architecture)

    cfg = load_depotr_config(CONFIG, ["MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True"])
    assert cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED
    assert build_model(cfg).train_precision == torch.bfloat16
    cfg = load_depotr_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    assert build_model(cfg).train_precision == torch.float32


def test_amp_setting_kept_on_a_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_depotr_config(CONFIG, ["MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True"])
    assert cfg.MODEL.DEVICE == "cuda" and cfg.SOLVER.AMP.ENABLED


# ---------------------------------------------------------------------------------------------
# Config and path mistakes: one line naming the key or file (issue 23 item 6)


def test_override_typo_names_the_key_and_the_nearest_valid_one():
    with pytest.raises(
        ConfigError, match=r"^unknown config key TEST.FLIPP in the overrides; did you mean TEST.FLIP\?$"
    ):
        load_depotr_config(CONFIG, ["TEST.FLIPP", "True"])
    with pytest.raises(ConfigError, match=r"^unknown config key NOTHING.LIKE.IT in the overrides$"):
        load_depotr_config(CONFIG, ["NOTHING.LIKE.IT", "1"])


def test_odd_number_of_overrides():
    with pytest.raises(ConfigError, match=r"KEY VALUE pairs; got 3 values: TEST.FLIP True MODEL.WEIGHTS$"):
        load_depotr_config(CONFIG, ["TEST.FLIP", "True", "MODEL.WEIGHTS"])


def test_override_of_the_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="config overrides: .*TEST.FLIP"):
        load_depotr_config(CONFIG, ["TEST.FLIP", "[1, 2]"])


def test_an_integer_override_of_a_float_key_is_that_float():
    """The friction: SOLVER.WARMUP_EPOCHS 0 was refused with yacs' "Type mismatch (<class 'float'>
    vs. <class 'int'>)" (its default is 0.0)."""
    cfg = load_depotr_config(CONFIG, ["SOLVER.WARMUP_EPOCHS", "0", "SOLVER.BASE_LR", -2, "TEST.SMOOTH.BETA", "3"])
    assert (cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.BASE_LR, cfg.TEST.SMOOTH.BETA) == (0.0, -2.0, 3.0)
    assert all(type(v) is float for v in (cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.BASE_LR, cfg.TEST.SMOOTH.BETA))
    assert type(load_depotr_config(CONFIG, ["SOLVER.MAX_ITER", "7"]).SOLVER.MAX_ITER) is int  # int keys stay int


@pytest.mark.parametrize(
    "key, value",
    [("SOLVER.WARMUP_EPOCHS", "True"), ("SOLVER.MAX_ITER", "1.5"), ("SOLVER.WARMUP_EPOCHS", "1" * 400)],
    ids=["bool-for-float", "float-for-int", "int-beyond-floats"],
)
def test_other_numbers_of_another_type_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^config overrides: Type mismatch .* for config key: {key}$"):
        load_depotr_config(CONFIG, [key, value])


def test_an_integer_of_a_float_key_in_a_config_file_is_that_float(tmp_path):
    """The friction: "WARMUP_EPOCHS: 0" in a yaml file was refused with yacs' "Type mismatch
    (<class 'float'> vs. <class 'int'>)" though "SOLVER.WARMUP_EPOCHS 0" on the command line was not."""
    base = tmp_path / "base.yaml"
    base.write_text(f"_BASE_: {CONFIG}\nSOLVER:\n  BASE_LR: 1\n")
    path = tmp_path / "config.yaml"
    path.write_text("_BASE_: base.yaml\nSOLVER:\n  WARMUP_EPOCHS: 0\n  MAX_ITER: 7\nTEST:\n  SMOOTH:\n    BETA: -3\n")
    cfg = load_depotr_config(str(path))
    values = (cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.BASE_LR, cfg.TEST.SMOOTH.BETA, cfg.SOLVER.MAX_ITER)
    assert values == (0.0, 1.0, -3.0, 7)
    assert [type(v) for v in values] == [float, float, float, int]  # int keys stay int


@pytest.mark.parametrize(
    "key, value",
    [
        ("SOLVER.WARMUP_EPOCHS", "abc"),
        ("SOLVER.WARMUP_EPOCHS", "True"),
        ("SOLVER.MAX_ITER", "1.5"),
        ("SOLVER.WARMUP_EPOCHS", "1" * 400),
    ],
    ids=["string-for-float", "bool-for-float", "float-for-int", "int-beyond-floats"],
)
def test_other_values_of_another_type_in_a_config_file_are_refused(tmp_path, key, value):
    section, name = key.split(".")
    path = tmp_path / "config.yaml"
    path.write_text(f"_BASE_: {CONFIG}\n{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: Type mismatch .* for config key: {key}$"):
        load_depotr_config(str(path))


def test_yaml_typo_names_the_file_and_the_nearest_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(f"_BASE_: {CONFIG}\nMODEL:\n  DEPOTR:\n    ENC_LAYER: 2\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{path} .* unknown config key MODEL.DEPOTR.ENC_LAYER; did you mean MODEL.DEPOTR.ENC_LAYERS\?$",
    ):
        load_depotr_config(str(path))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("MODEL:\n  DEPOTR:\n    HEAD: [regression\nTEST:\n  FLIP: True\n")
    with pytest.raises(ConfigError, match=rf"^{path}:[45]: invalid YAML: ") as info:
        load_depotr_config(str(path))
    assert "\n" not in str(info.value)


def test_yml_for_yaml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"configs/depotr_r50.yml does not exist, but .*configs/depotr_r50.yaml does"):
        load_depotr_config(CONFIG[: -len(".yaml")] + ".yml")
    with pytest.raises(ConfigError, match=r"^config file .*nothing.yaml does not exist$"):
        load_depotr_config(str(tmp_path / "nothing.yaml"))


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '_BASE_: "nothing.yaml"\n',
            r"^{path} \(or a _BASE_ file\): cannot read .*nothing\.yaml: No such file or directory$",
        ),
        ("- MODEL\n- TEST\n", r"^{path} \(or a _BASE_ file\) is not a yaml mapping of config keys \("),
        ("", r"^{path} \(or a _BASE_ file\) is not a yaml mapping of config keys \("),
        ("VERSION: 3\n", r"^{path}: Cannot merge a v3 config into a v2 config\.$"),
    ],
    ids=["missing-base", "list", "empty", "newer-version"],
)
def test_a_config_file_that_cannot_be_merged_is_a_config_error(tmp_path, text, message):
    """The friction: a missing _BASE_ was a FileNotFoundError, a yaml list an AttributeError and an
    empty file a TypeError, each a traceback instead of the one-line error."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.format(path=path)) as info:
        load_depotr_config(str(path))
    assert "\n" not in str(info.value)
