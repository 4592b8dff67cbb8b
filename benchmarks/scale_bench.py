"""Local scale-out: the same job with 1 and 2 DirectRunner worker processes, side by side.

    python benchmarks/scale_bench.py [--rounds 2] [--seconds 1.6] [--windows 1]
                                     [--modalities rgb,pose,flow]

Runs the preprocessing command on the cached sample clips (--windows consecutive windows of
--seconds from each of the 9 clips, one manifest row each) in these configurations, alternating
them round by round so that they share the machine's load, and prints wall seconds, output
frames per second and the ratio to the first:

  1w x1t   multi_processing, 1 worker,  1 OpenCV thread   (one core's worth of work)
  1w auto  multi_processing, 1 worker,  OpenCV's default threads
  2w x1t   multi_processing, 2 workers, 1 OpenCV thread each (the default for 2 workers)

While each run goes, the CPU time of every process under it is sampled from /proc (Linux), so
the table also shows the CPU seconds all processes spent, the average number of busy cores
(CPU seconds / wall seconds) and how many processes did real work (>= 10% of the busiest one):
a near-linear speed-up needs the second worker to be busy, not only present. Each configuration
also runs the job on one 0.2 s row, which gives the fixed cost of a job (start-up, the pose model
check, starting the workers, building the shards); "work" is what is left, and its speed-up is
what a long job approaches.

Not a test: run by hand; the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import assets  # noqa: E402

CONFIGS = {
    "1w x1t": ["--direct_num_workers=1", "--threads_per_worker=1"],
    "1w auto": ["--direct_num_workers=1"],
    "2w x1t": ["--direct_num_workers=2"],
}


def _tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of `root` and every process under it, by pid (Linux /proc)."""
    parent, cpu = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    out = {}
    for pid in cpu:
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        if p == root:
            out[pid] = cpu[pid]
    return out


def run_sampled(cmd: list[str], cwd: str) -> tuple[float, dict[int, float]]:
    """Runs `cmd`; returns wall seconds and the last CPU seconds seen per process under it."""
    seen: dict[int, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stop = threading.Event()

    def sample():
        while not stop.wait(0.25):
            seen.update(_tree_cpu(proc.pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
    return wall, seen


def command(manifest: str, output_dir: str, modalities: str, extra: list[str]) -> list[str]:
    """The preprocessing command line for one run."""
    return [sys.executable, "-m", "pipelines.preprocess", f"--input={manifest}",
            f"--output_dir={output_dir}", f"--modalities={modalities}",
            "--runner=DirectRunner", "--direct_running_mode=multi_processing",
            *extra]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.6, help="length of each window")
    p.add_argument(
        "--windows",
        type=int,
        default=1,
        help="consecutive windows per clip: more, smaller inputs (9 x this many rows)",
    )
    p.add_argument("--modalities", default="rgb,pose,flow")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="perfnet-scale-")
    manifest = os.path.join(tmp, "m.csv")
    with open(manifest, "w") as f:
        f.write("path,label,start,end,id\n")
        for name in sorted(os.listdir(assets.sample_video_path("sports2d_demo.mp4").parent)):
            path = assets.sample_video_path(name)
            for w in range(args.windows):
                start, end = w * args.seconds, (w + 1) * args.seconds
                f.write(f"{path},x,{start:g},{end:g},{name.rsplit('.', 1)[0]}_w{w}\n")
    fixed_manifest = os.path.join(tmp, "fixed.csv")  # one 0.2 s row: the job's fixed cost
    with open(fixed_manifest, "w") as f:
        path = assets.sample_video_path("sports2d_demo.mp4")
        f.write(f"path,label,start,end,id\n{path},x,0,0.2,fixed\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    fixed: dict[str, list[float]] = {name: [] for name in CONFIGS}
    usage: dict[str, list[tuple[float, int]]] = {name: [] for name in CONFIGS}
    frames = 0
    for r in range(args.rounds):
        for name, extra in CONFIGS.items():
            tag = f"{r}-{name.replace(' ', '')}"
            fixed_cmd = command(fixed_manifest, f"{tmp}/fixed-{tag}", args.modalities, extra)
            fixed[name].append(run_sampled(fixed_cmd, repo)[0])
            out = os.path.join(tmp, f"out-{tag}")
            wall, cpu = run_sampled(command(manifest, out, args.modalities, extra), repo)
            times[name].append(wall)
            busiest = max(cpu.values())
            working = sum(1 for c in cpu.values() if c >= 0.1 * busiest)
            usage[name].append((sum(cpu.values()), working))
            with open(os.path.join(out, "dataset_info.json")) as f:
                frames = sum(s["frames"] for s in json.load(f)["splits"].values())
            top = sorted(cpu.values(), reverse=True)[:4]
            print(
                f"round {r}: {name:8s} {wall:7.1f} s wall ({fixed[name][-1]:.1f} s for one 0.2 s "
                f"row), {usage[name][-1][0]:7.1f} CPU s; busiest processes: "
                f"{', '.join(f'{c:.1f}' for c in top)} CPU s",
                flush=True,
            )
    base = min(times["1w x1t"])
    base_work = base - min(fixed["1w x1t"])
    print(
        f"\n{frames} frames per run ({args.modalities}; {9 * args.windows} rows of "
        f"{args.seconds:g} s), best of {args.rounds} rounds. 'fixed': the same job on one 0.2 s "
        "row (start-up, model check, workers, shards); 'work' = seconds - fixed"
    )
    print(
        f"{'config':10s}{'seconds':>9s}{'frames/s':>10s}{'speed-up':>10s}{'CPU s':>8s}"
        f"{'busy cores':>12s}{'working procs':>15s}{'fixed s':>9s}{'work s':>8s}"
        f"{'work speed-up':>15s}"
    )
    for name, ts in times.items():
        best = min(ts)
        cpu_s, working = usage[name][ts.index(best)]
        work = best - min(fixed[name])
        print(
            f"{name:10s}{best:9.1f}{frames / best:10.2f}{base / best:10.2f}{cpu_s:8.1f}"
            f"{cpu_s / best:12.2f}{working:15d}{min(fixed[name]):9.1f}{work:8.1f}"
            f"{base_work / work:15.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
