"""Package discovery only (metadata is in pyproject.toml).

`passes/` sits at the top level of the repository, next to `tcomp/`, but is imported as `tcomp.passes`;
setuptools' package-dir mapping does that, and this file lists the sub-packages of both trees.
"""
from setuptools import find_packages, setup

packages = ["tcomp", *(f"tcomp.{p}" for p in find_packages("tcomp"))]
packages += ["tcomp.passes", *(f"tcomp.passes.{p}" for p in find_packages("passes"))]

setup(packages=packages, package_dir={"tcomp": "tcomp", "tcomp.passes": "passes"})
