"""Package discovery; everything else is in pyproject.toml.

Packages are found, not listed, so a new subpackage can never be left out of the wheel. The pattern
library lives in the repository's patterns/ folder but installs as fusekit.patterns: a top-level
module named "patterns" could clash with anything else in site-packages.
"""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["fusekit", "fusekit.*"])
      + ["fusekit.patterns"] + [f"fusekit.patterns.{p}" for p in find_packages("patterns")],
      package_dir={"fusekit.patterns": "patterns"})
