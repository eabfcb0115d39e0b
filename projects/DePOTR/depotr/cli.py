"""What every command-line entry point (``train_net.py``, ``demo/demo.py``, ``tools/*.py``) shares,
in the standard library only, so that an entry point parses its arguments (and answers ``--help``)
before it imports torch or Detectron2 (``import depotr`` is cheap for the same reason): config
overrides as ``--opts KEY VALUE ...`` (Detectron2's demo) or bare ``KEY VALUE ...`` after the
options (Detectron2's train_net), ``--random-weights`` (the one explicit way to run a model with an
empty ``MODEL.WEIGHTS``), and :class:`ConfigError`, a user mistake :func:`run_main` prints in one line.
"""

import argparse
import os
import re
import signal
import sys
import warnings
from typing import Callable, List, Optional, Sequence

__all__ = [
    "RANDOM_WEIGHTS_FLAG",
    "ConfigError",
    "add_config_arguments",
    "config_overrides",
    "listing",
    "parse_command_line",
    "quiet_third_party_warnings",
    "run_main",
    "training_argument_parser",
]

RANDOM_WEIGHTS_FLAG = "--random-weights"
_OVERRIDES_HELP = (
    "config overrides, KEY VALUE pairs: either bare after the options or after --opts (both are "
    "accepted, as Detectron2's train_net and demo do)"
)
# The top-level keys of a DePOTR config (Detectron2's; tests/test_cli.py checks them): a bare token
# that starts with one of them, upper case, begins the overrides (parse_command_line).
CONFIG_ROOT_KEYS = frozenset(
    {"CUDNN_BENCHMARK", "DATALOADER", "DATASETS", "GLOBAL", "INPUT", "MODEL", "OUTPUT_DIR", "SEED", "SOLVER", "TEST"}
    | {"VERSION", "VIS_PERIOD", "FLOAT32_PRECISION"}  # the last: Detectron2 main only (not in v0.6)
)
# (category, message regex) of the third-party warnings the commands printed: torch.jit's
# deprecations (Detectron2/fvcore imports, the export) and setuptools' of pkg_resources.
_QUIETED_WARNINGS = (
    # TorchScript is the export's format (docs/export.md): the notice is not the user's to act on
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),
    # the ONNX exporter's note that it leaves a strided slice unfolded (the graph is still right)
    (UserWarning, r"Constant folding - Only steps=1 can be constant folded"),
    (UserWarning, r"pkg_resources is deprecated"),
    (DeprecationWarning, r".*pkg_resources"),
)


class ConfigError(ValueError):
    """A user mistake in a config file, a config override, or a file or folder a config names (an
    ``OUTPUT_DIR`` another run holds); the message is one line naming the key, file or folder (and
    the nearest valid key for a typo)."""


def listing(items: Sequence[str], listed: int = 8, separator: str = ", ") -> str:
    """The first ``listed`` of ``items`` joined by ``separator``, then "... and N more" for the
    rest: long lists (parameter names, config keys) in one-line messages."""
    more = f" ... and {len(items) - listed} more" if len(items) > listed else ""
    return separator.join(items[:listed]) + more


def add_config_arguments(
    parser: argparse.ArgumentParser, config_required: bool = True, random_weights: bool = True
) -> None:
    """Adds ``--config-file``, ``--random-weights`` (when the command runs a model) and the
    overrides (``--opts`` and the bare positional ones) to ``parser``; parse with
    :func:`parse_command_line` and read the overrides with :func:`config_overrides`."""
    parser.add_argument(
        "--config-file", required=config_required, default="", metavar="FILE", help="a DePOTR config (yaml)"
    )
    if random_weights:
        parser.add_argument(
            RANDOM_WEIGHTS_FLAG,
            action="store_true",
            help="run the model with random weights when MODEL.WEIGHTS is empty (otherwise an error)",
        )
    parser.add_argument("--opts", dest="dash_opts", nargs=argparse.REMAINDER, default=[], help=_OVERRIDES_HELP)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE", help=_OVERRIDES_HELP)


def parse_command_line(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` (default: ``sys.argv[1:]``), with the bare overrides split off
    first: everything from the first upper-case token whose first dotted part is a top-level
    config key (``MODEL.WEIGHTS``, ``OUTPUT_DIR``, ...), so that an option taking several values
    (``--input a.jpg b.jpg``, ``--format``) does not swallow them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = next((i for i, t in enumerate(argv) if t.isupper() and t.split(".")[0] in CONFIG_ROOT_KEYS), len(argv))
    args = parser.parse_args(argv[:split])
    args.opts = list(args.opts or []) + argv[split:]
    return args


def config_overrides(args: argparse.Namespace) -> List[str]:
    """The KEY VALUE overrides of parsed ``args``: the bare ones, then those after ``--opts``
    (a ``--opts`` among the bare ones, which argparse leaves there, is dropped)."""
    bare = [token for token in (args.opts or []) if token != "--opts"]
    return bare + list(getattr(args, "dash_opts", None) or [])


def training_argument_parser(description: str) -> argparse.ArgumentParser:
    """The options of Detectron2's ``default_argument_parser`` (same names, defaults and
    ``--dist-url`` port rule), built without importing Detectron2, plus ``--opts`` and
    ``--random-weights`` (for ``--eval-only``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, config_required=False)
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in OUTPUT_DIR")
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of gpus *per machine*")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
    parser.add_argument(
        "--dist-url", default=f"tcp://127.0.0.1:{port}", help="initialization URL for the distributed backend"
    )
    return parser


def quiet_third_party_warnings() -> None:
    """Ignores the known dependency warnings of :data:`_QUIETED_WARNINGS` in this process."""
    for category, message in _QUIETED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def run_main(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Runs an entry point's ``main(argv)`` with the third-party warnings quieted; a
    :class:`ConfigError` becomes ``error: <message>`` on stderr and status 2, a Ctrl-C that main
    does not handle (e.g. while the model loads) ``stopped (Ctrl-C)`` and status 130, the shell's
    (no traceback). Returns main's status (None: 0)."""
    quiet_third_party_warnings()
    try:
        return main(argv) or 0
    except ConfigError as e:
        print(f"error: {config_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT


# torch's DataLoader raises a worker's exception again in the main process, as the same type with
# the worker's traceback as its message; the traceback's last line is "<module>.ConfigError: <message>".
_WORKER_ERROR = re.compile(r"Caught ConfigError in DataLoader worker process \d+\.\nOriginal Traceback")


def config_error_message(error: ConfigError) -> str:
    """The message of ``error``: its own, or that of the data-loader worker's ConfigError it carries."""
    text = str(error)
    if _WORKER_ERROR.match(text):
        return text.rstrip().splitlines()[-1].split("ConfigError: ", 1)[-1]
    return text
