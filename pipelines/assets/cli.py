"""The set-up step: `fetch` (every asset, fetched, built and verified) and its command line.

    python -m pipelines.assets fetch                      fetch, build, verify (idempotent)
    python -m pipelines.assets path model|videos|manifest|cache|<pose model name>

`--cache_dir` overrides `$PERFNET_CACHE` for the command. `fetch` exits with status 1 and one
`error: ...` line when an asset cannot be fetched, built or verified.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.assets.cache import (
    CACHE_ENV,
    DEFAULT_CACHE_DIR,
    AssetError,
    cache_dir,
    manifest_file,
    pose_model_file,
    videos_dir,
)
from pipelines.assets.models import ensure_pose_model
from pipelines.assets.registry import POSE_MODELS
from pipelines.assets.samples import ensure_manifest, ensure_videos


def fetch(cache: Path | None = None, log=print) -> None:
    """Fetches, builds and verifies every asset into `cache` (default `cache_dir()`)."""
    cache = cache_dir() if cache is None else cache
    log(f"cache    {cache}")
    for model in POSE_MODELS.values():
        ensure_pose_model(cache, model, log)
    ensure_videos(cache, log)
    ensure_manifest(cache, log)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (`python -m pipelines.assets`, `perfnet-assets`); returns its status."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.assets",
        description="Fetch, build and verify the offline assets (pose model, sample videos).",
    )
    parser.add_argument(
        "--cache_dir",
        default=None,
        help=f"cache directory (default: ${CACHE_ENV}, else {DEFAULT_CACHE_DIR})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch, build and verify everything (idempotent)")
    path_cmd = sub.add_parser("path", help="print the path of an asset")
    path_cmd.add_argument(
        "what",
        choices=("model", "videos", "manifest", "cache", *POSE_MODELS),
        help="model: the default pose model; or a pose model by name",
    )
    args = parser.parse_args(argv)
    if args.cache_dir:
        os.environ[CACHE_ENV] = args.cache_dir
    cache = cache_dir()
    if args.command == "fetch":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the TFLite converter's chatter
        try:
            fetch(cache)
        except AssetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    paths = {
        "model": pose_model_file(cache),
        **{name: pose_model_file(cache, m) for name, m in POSE_MODELS.items()},
        "videos": videos_dir(cache),
        "manifest": manifest_file(cache),
        "cache": cache,
    }
    print(paths[args.what])
    return 0
