"""Distributed training on CPU: 2 gloo processes through DePOTR's launcher."""

import json
import os

import pytest
import torch

from detectron2.utils import comm

import train_net
from depotr.config import load_depotr_config
from depotr.data.synthetic_cache import synthetic_split_paths
from depotr.engine import Trainer, launch
from depotr.engine.run_dir import LOCK_NAME

from .conftest import INSTANT_CONFIG, instant_args


def _train_and_dump_parameters(output_dir: str, synthetic_root: str) -> None:
    args = instant_args(output_dir, synthetic_root, "SOLVER.MAX_ITER", "6", extra=["--num-gpus", "2"])
    cfg = train_net.setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module  # DistributedDataParallel
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.save(params, os.path.join(output_dir, f"parameters_rank{comm.get_rank()}.pth"))


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_processes")
def test_two_cpu_processes_train_in_lockstep_and_evaluate_all_images(tmp_path, synthetic_root):
    output_dir = str(tmp_path / "ddp")
    os.makedirs(output_dir)
    launch(_train_and_dump_parameters, 2, args=(output_dir, synthetic_root))
    assert not os.path.exists(os.path.join(output_dir, LOCK_NAME))  # rank 0 released OUTPUT_DIR at exit

    rank0 = torch.load(os.path.join(output_dir, "parameters_rank0.pth"))
    rank1 = torch.load(os.path.join(output_dir, "parameters_rank1.pth"))
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)

    # The evaluator gathered the predictions of both ranks: every val image has results.
    syn = load_depotr_config(INSTANT_CONFIG).DATASETS.SYNTHETIC
    with open(synthetic_split_paths(synthetic_root, "val", syn.NUM_VAL_IMAGES, syn.SEED)["json_file"]) as f:
        val_image_ids = {image["id"] for image in json.load(f)["images"]}
    with open(os.path.join(output_dir, "inference", "synthetic_persons_val", "coco_instances_results.json")) as f:
        predicted_image_ids = {r["image_id"] for r in json.load(f)}
    assert predicted_image_ids == val_image_ids
