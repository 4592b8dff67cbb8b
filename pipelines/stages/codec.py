"""The JPEG codec of the stored streams (OpenCV's libjpeg-turbo): frames in, bytes out and back.

No Beam, no pose model: the tools (validate, preview) and the benchmarks import this, not the
clip processor.
"""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int, full_chroma: bool = False) -> bytes:
    """uint8 [H, W, 3] RGB -> JPEG bytes at `quality` (1..100).

    full_chroma: 4:4:4 sampling instead of the usual 4:2:0. Flow images need it: their x and y
    live in R and G, and 4:2:0 would halve their resolution and mix them into B.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if full_chroma:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {rgb.shape}")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 [H, W, 3] RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable JPEG image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
