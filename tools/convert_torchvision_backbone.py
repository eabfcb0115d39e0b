#!/usr/bin/env python
"""Converts torchvision ResNet weights (the thesis' ImageNet initialisation) for our backbone.

    python tools/convert_torchvision_backbone.py resnet50.pth R-50-torchvision.pkl
    python train_net.py --config-file configs/depotr_r50.yaml MODEL.WEIGHTS R-50-torchvision.pkl

The input is a torchvision ResNet state dict: ``torch.save(torchvision.models.resnet50(
weights="IMAGENET1K_V1").state_dict(), "resnet50.pth")``, or the file torchvision downloads for
those weights. The output (``.pkl`` or ``.pth``) holds the same tensors under Detectron2's
ResNet names, which ``DetectionCheckpointer`` matches by suffix into every DePOTR config with
that ResNet. The command prints the
``MODEL.RESNETS`` settings the weights need. Use them with torchvision's input convention: RGB,
``PIXEL_MEAN [123.675, 116.28, 103.53]``, ``PIXEL_STD [58.395, 57.12, 57.375]`` (the defaults of
``configs/Base-DePOTR.yaml``). Names and norms: ``depotr/modeling/torchvision_resnet.py``.
"""

import argparse
import sys

# torch and Detectron2 (depotr.modeling) are imported once the arguments are parsed (a fast --help,
# and run_main's filter of their import warnings applies)
from depotr.cli import ConfigError, run_main
from depotr.file_io import output_problem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="torchvision ResNet state dict (.pth)")
    parser.add_argument("output", help="Detectron2 weights to write (.pkl or .pth)")
    args = parser.parse_args(argv)
    if not args.output.endswith((".pkl", ".pth")):
        parser.error(f"output {args.output}: must end in .pkl or .pth")
    problem = output_problem(args.output)
    if problem:
        parser.error(f"output {args.output}: {problem}")
    import torch

    from depotr.modeling.torchvision_resnet import convert_torchvision_resnet, save_detectron2_weights

    try:
        state_dict = torch.load(args.input, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise ConfigError(f"cannot read {args.input} as a torch state dict ({type(e).__name__}: {e})") from e
    if not isinstance(state_dict, dict):
        raise ConfigError(f"{args.input} holds a {type(state_dict).__name__}, expected a state dict")
    try:
        converted = convert_torchvision_resnet(state_dict)
    except ValueError as e:
        raise ConfigError(f"{args.input}: {e}") from e
    try:
        save_detectron2_weights(args.output, converted.state_dict)
    except OSError as e:  # the write itself (a full disk, ...): named by the output, not its temporary file
        print(f"error: cannot write {args.output} ({e.strerror or e})", file=sys.stderr)
        return 1
    classifier = [k for k in converted.left_out if k.startswith("fc.")]
    print(
        f"{args.output}: {len(converted.state_dict)} tensors of ResNet-{converted.config['DEPTH']}; left out: "
        f"{' '.join(classifier) or 'no'} classifier, {len(converted.left_out) - len(classifier)} num_batches_tracked"
    )
    print("config: " + " ".join(f"MODEL.RESNETS.{k} {v}" for k, v in converted.config.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
