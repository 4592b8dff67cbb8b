"""Peak memory of evaluation per clip: measured on CPU at reduced sizes, against the graph
count of `training.memory`, extrapolated to the presets' evaluation clip.

Each (model, clip size, batch) runs in a fresh process: the classifier is built and run once on
a small clip (kernels loaded, allocator warm), the measured batch is made, the process's peak
resident size is reset (Linux: `/proc/self/clear_refs`), and the peak during the measured call
(`VmHWM`) less the resident size before it is what the call cost (the batch is counted apart:
made before the reset). The count is `training.memory.clip_memory`'s peak of live activations
(without `ACTIVATION_FACTOR`; the inputs, made before the reset, are in neither figure). A
straight line through the measured points (bytes against voxels T x H x W x batch) gives the
cost of the full evaluation clip, printed beside the count there, and the per-replica batch
`training.memory.eval_batch` picks for devices of common sizes.

    python benchmarks/eval_memory.py                      # R3D50-G, S3D-G, EPAM-Net
    python benchmarks/eval_memory.py --presets k600_r3d50g_teacher_rgb --sizes 16x64x64,32x96x96

Run by hand; prints figures (not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_PRESETS = ("k600_r3d50g_teacher_rgb", "k600_s3dg_teacher_rgb", "k600_epam")
DEFAULT_SIZES = ("16x64x64", "32x96x96", "32x128x128", "64x128x128")
DEVICES_GIB = (16, 24, 40, 80)
MIB = 1 << 20

_CHILD = r"""
import json, sys
import numpy as np
import tensorflow as tf
from training import memory
from training.config import get_preset
from training.trainer import build_model

preset, t, h, w, batch = sys.argv[1], *map(int, sys.argv[2:6])
cfg = get_preset(preset)
cfg.data.eval_num_frames, cfg.data.eval_crop_size = t, (h, w)
model = build_model(cfg, cfg.data.num_classes)
mods = cfg.model_modalities()


def clips(t, h, w, b):
    out = {}
    for m in mods:
        mh, mw = h, w
        if m == "heatmap":
            s = cfg.data.heatmap_stride
            mh, mw = -(-h // s), -(-w // s)
        c = {"rgb": 3, "pose": 3, "flow": 2, "heatmap": 17}[m]
        out[m] = tf.random.uniform((b, t, mh, mw, c))
    return out if len(mods) > 1 else out[mods[0]]


@tf.function(reduce_retracing=False)
def run(x):
    y = model(x, training=False)
    return tf.nest.map_structure(tf.reduce_sum, y)


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024


run(clips(4, 32, 32, 1))
x = clips(t, h, w, batch)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the current resident size
before = status("VmRSS")
tf.nest.map_structure(lambda v: v.numpy(), run(x))
after = status("VmHWM")
count = memory.clip_memory([cfg], (t, h, w))
print(json.dumps({
    "measured": after - before,
    "counted": batch * count.activation_bytes,
}))
"""


def measure(preset: str, size: tuple[int, int, int], batch: int) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, preset, *map(str, size), str(batch)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode:
        raise RuntimeError(f"{preset} {size} x{batch}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="TxHxW,...")
    p.add_argument("--batch2", action="store_true", help="also each size at batch 2")
    args = p.parse_args(argv)

    from training import memory
    from training.config import get_preset

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for preset in args.presets.split(","):
        cfg = get_preset(preset)
        full = (cfg.data.eval_num_frames, *cfg.data.eval_crop_size)
        print(f"{preset}: evaluation clip {'x'.join(map(str, full))}")
        print(f"  {'clip':>12} {'batch':>5} {'counted MiB':>12} {'measured MiB':>13} {'ratio':>6}")
        xs, ys = [], []
        for size in sizes:
            for batch in (1, 2) if args.batch2 else (1,):
                r = measure(preset, size, batch)
                voxels = batch * size[0] * size[1] * size[2]
                xs.append(voxels)
                ys.append(r["measured"])
                print(
                    f"  {'x'.join(map(str, size)):>12} {batch:>5} {r['counted'] / MIB:>12.0f} "
                    f"{r['measured'] / MIB:>13.0f} {r['measured'] / r['counted']:>6.2f}"
                )
        a, b = fit_line(xs, ys)
        voxels = full[0] * full[1] * full[2]
        count = memory.clip_memory([cfg], full)
        counted = count.activation_bytes
        extrapolated = a + b * voxels
        print(
            f"  full clip: activations counted {counted / (1 << 30):.2f} GiB, measured line "
            f"{extrapolated / (1 << 30):.2f} GiB (fit: {a / MIB:.0f} MiB + "
            f"{b * 1e6 / MIB:.1f} MiB per 10^6 voxels), ratio {extrapolated / counted:.2f}; "
            f"planned per clip (input {count.input_bytes / (1 << 30):.2f} GiB + activations "
            f"x{memory.ACTIVATION_FACTOR}): {count.per_clip / (1 << 30):.2f} GiB, weights "
            f"{count.weight_bytes / (1 << 30):.2f} GiB"
        )
        fits = []
        for gib in DEVICES_GIB:
            usable = int(memory.MEMORY_FRACTION * gib * (1 << 30))
            fits_one = count.weight_bytes + count.per_clip <= usable
            n = memory.fit_batch(usable, count) if fits_one else 0
            fits.append(f"{gib} GiB: {n}")
        print(f"  evaluation clips per replica: {', '.join(fits)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
