"""Local scale-out: the same job with 1 and 2 DirectRunner worker processes, side by side.

    python benchmarks/scale_bench.py [--rounds 2] [--seconds 1.6] [--modalities rgb,pose,flow]

Runs the preprocessing command on the cached sample clips (one window of --seconds from each of
the 9 clips) in these configurations, alternating them round by round so that they share the
machine's load, and prints wall seconds, output frames per second and the ratio to the first:

  1w x1t   multi_processing, 1 worker,  1 OpenCV thread   (one core's worth of work)
  1w auto  multi_processing, 1 worker,  OpenCV's default threads
  2w x1t   multi_processing, 2 workers, 1 OpenCV thread each (the default for 2 workers)

Not a test: run by hand; the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import assets  # noqa: E402

CONFIGS = {
    "1w x1t": ["--direct_num_workers=1", "--threads_per_worker=1"],
    "1w auto": ["--direct_num_workers=1"],
    "2w x1t": ["--direct_num_workers=2"],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.6)
    p.add_argument("--modalities", default="rgb,pose,flow")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="perfnet-scale-")
    manifest = os.path.join(tmp, "m.csv")
    with open(manifest, "w") as f:
        f.write("path,label,start,end,id\n")
        for name in sorted(os.listdir(assets.sample_video_path("sports2d_demo.mp4").parent)):
            path = assets.sample_video_path(name)
            f.write(f"{path},x,0,{args.seconds},{name.rsplit('.', 1)[0]}\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    frames = 0
    for r in range(args.rounds):
        for name, extra in CONFIGS.items():
            out = os.path.join(tmp, f"out-{r}-{name.replace(' ', '')}")
            cmd = [sys.executable, "-m", "pipelines.preprocess", f"--input={manifest}",
                   f"--output_dir={out}", f"--modalities={args.modalities}",
                   "--runner=DirectRunner", "--direct_running_mode=multi_processing",
                   *extra]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
            with open(os.path.join(out, "dataset_info.json")) as f:
                frames = sum(s["frames"] for s in json.load(f)["splits"].values())
            print(f"round {r}: {name:8s} {times[name][-1]:7.1f} s", flush=True)
    base = min(times["1w x1t"])
    print(f"\n{frames} frames per run ({args.modalities}), best of {args.rounds} rounds")
    print(f"{'config':10s}{'seconds':>9s}{'frames/s':>10s}{'speed-up':>10s}")
    for name, ts in times.items():
        best = min(ts)
        print(f"{name:10s}{best:9.1f}{frames / best:10.2f}{base / best:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
