"""Thin shim so that Dataflow's --setup_file can build the package; metadata is in setup.cfg."""

import setuptools

setuptools.setup()
