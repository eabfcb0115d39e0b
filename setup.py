#!/usr/bin/env python
"""Installs the DePOTR package (``projects/DePOTR/depotr``) as ``depotr`` with its compiled op.

The extension ``depotr._C`` holds the multi-scale deformable attention kernels. The C++ CPU
kernel is always built; the CUDA kernel is added when CUDA is available at build time or
``FORCE_CUDA=1`` is set (as Detectron2's ``setup.py`` does).
"""

import glob
import os
import sys

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

PACKAGE_ROOT = os.path.join("projects", "DePOTR")
CSRC_DIR = os.path.join(PACKAGE_ROOT, "depotr", "layers", "csrc")


def get_extensions() -> list:
    """Returns the ``depotr._C`` extension: CPU sources always, CUDA sources when possible."""
    sources = sorted(glob.glob(os.path.join(CSRC_DIR, "**", "*.cpp"), recursive=True))
    cuda_sources = sorted(glob.glob(os.path.join(CSRC_DIR, "**", "*.cu"), recursive=True))
    define_macros = []
    extra_compile_args = {"cxx": ["-O3"]}
    extra_link_args = []
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        # at::parallel_for is inlined into the extension and only runs in parallel when the
        # extension itself is compiled with OpenMP; it then shares torch's libgomp.so.1.
        extra_compile_args["cxx"].append("-fopenmp")
        extra_link_args.append("-fopenmp")
    extension = CppExtension
    use_cuda = (torch.cuda.is_available() and CUDA_HOME is not None) or os.environ.get("FORCE_CUDA") == "1"
    if use_cuda:
        extension = CUDAExtension
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--use_fast_math", "-lineinfo"]
    return [
        extension(
            "depotr._C",
            sources,
            include_dirs=[os.path.abspath(CSRC_DIR)],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]


setup(
    name="depotr",
    version="0.1.0",
    description="DePOTR: deformable pose transformer for top-down 2D human pose estimation in Detectron2",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": PACKAGE_ROOT},
    packages=find_packages(where=PACKAGE_ROOT),
    package_data={"depotr": ["layers/csrc/**/*"]},
    # What DePOTR itself imports. The versions that only Detectron2 v0.6 needs (numpy<2,
    # Pillow 9.5, ...) are pinned by tools/install.sh's v0.6 route, not here.
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "detectron2",
        "numpy>=1.24",
        "opencv-python-headless",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5",
        "albumentations>=2.0,<2.1",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "scikit-image"],
        "export": ["onnx", "onnxruntime"],
        # Under numpy 2, build it from source: pip install --no-binary xtcocotools (docs/install.md).
        "crowdpose": ["xtcocotools==1.14.3"],
        "lint": ["ruff==0.17.6"],
    },
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
)
