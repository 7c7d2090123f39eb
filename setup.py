#!/usr/bin/env python
"""Installs the project's packages. Detectron2 itself is installed by tools/install.sh first
(it is not on the package registry; see tools/detectron2_compat/install_detectron2.py)."""
from setuptools import find_packages, setup

setup(
    name="segzoo",
    version="0.1.0",
    description="Mask2Former, SOTR, Mask Transfiner and CFT on Detectron2",
    python_requires=">=3.9",
    packages=find_packages(include=["segcommon*", "mask2former*", "sotr*", "transfiner*", "cft*"]),
    # compiled on first use (segcommon/layers/compiled.py)
    package_data={"mask2former": ["modeling/pixel_decoder/csrc/*.cpp"], "segcommon": ["layers/csrc/*.cpp"]},
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "fvcore>=0.1.5,<0.1.6",
        "pycocotools>=2.0.2",
        "opencv-python-headless",
        "scipy",
        "shapely",  # Detectron2 clips polygons with it whenever a crop runs (LSJ)
        "hotcoco",
        "tabulate",
        "tqdm",
        "ninja",  # builds the optional compiled CPU kernel of multi-scale deformable attention
    ],
    extras_require={
        "dev": ["pytest"],
        "deploy": ["onnx", "onnxscript", "onnxruntime"],  # tools/deploy: the ONNX exporter and runtime
        "compare": ["transformers"],  # tools/compare_transformers.py: the peer Mask2Former it times
    },
)
