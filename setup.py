# Metadata lives in setup.cfg; this shim lets pybuild's setuptools plugin drive the build.
from setuptools import setup

setup()
