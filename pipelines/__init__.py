"""Beam wiring: manifests, decoding, the per-video DoFn and the `run()` entry point."""
