"""Packaging: the top-level folders are the architecture, installed under the single `adafv` namespace.

Every folder below maps to one subpackage; its own subpackages are found, not listed, so a new one cannot be
forgotten (a CI test builds the wheel and checks that every module and data file of these folders is in it).
Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "adafv": "adafv",  # the method
    "adafv.export": "export",
    "adafv.runtime": "runtime",
    "adafv.calib": "calib",
    "adafv.eval": "eval",
    "adafv.serve": "serve",
    "adafv.ros": "ros",
    "adafv.cli": "cli",
    "adafv.assets": "assets",  # sample images (data)
    "adafv.checkpoints": "checkpoints",  # the shipped toy-world model (data)
}

packages = []
for package, folder in FOLDERS.items():
    packages += [package] + [f"{package}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=FOLDERS,
    package_data={
        "adafv": ["py.typed"],
        "adafv.assets": ["*.jpg", "*.png", "README.md"],
        "adafv.ros": ["*.xml"],
        "adafv.checkpoints": ["*/*"],
        "adafv.calib": ["data/*.jsonl", "data/*.md", "data/images/*"],
    },
)
