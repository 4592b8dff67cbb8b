"""Coverage-guided fuzzing of the decode path: bytes -> a temporary .mp4 -> video.iter_frames.

Contract under test: for any bytes, `pipelines.stages.video.iter_frames` with resource limits either
streams frames or raises VideoError (LimitError included) or ValueError, within a few seconds.
Anything else is a finding: another exception type, a native crash (SIGSEGV, SIGABRT, ...), a
hang past `-timeout` seconds, or memory past `-rss_limit_mb`.

    pip install atheris==3.0.0                       # not a project dependency
    python fuzz/fuzz_decode.py -max_total_time=60    # libFuzzer flags pass through
    python fuzz/fuzz_decode.py FINDINGS/crash-...    # replay one input
    python fuzz/fuzz_decode.py --plain -max_total_time=60   # without atheris (see below)

The first run writes a seed corpus of small valid videos (MP4 with the index at either end,
MOV, AVI with MJPG/XVID/HuffYUV, MKV with FFV1/MJPG, WebM with VP8/VP9) to
`$PERFNET_CACHE/fuzz/corpus` (default `~/.cache/perfnet/fuzz/corpus`), and the fuzzer adds the
inputs that reach new code there. Findings go to `$PERFNET_CACHE/fuzz/findings/` as libFuzzer's
`crash-*`, `timeout-*` and `oom-*` files. Coverage comes from the instrumented Python of
`pipelines/stages/video.py`; FFmpeg inside the OpenCV wheel is not instrumented, so the mutations
that
exercise it are found by libFuzzer's generic mutators rather than by native coverage.

Without atheris (`--plain`, or when it is not installed) a random-mutation loop keeps the same
contract: each input runs in a worker process with the same time and memory limits, and a
finding is saved to the same folder. Not run in CI.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULTS = {"-timeout": "5", "-rss_limit_mb": "2048", "-max_len": "65536"}


def cache_dir() -> Path:
    return Path(os.environ.get("PERFNET_CACHE", Path.home() / ".cache" / "perfnet")) / "fuzz"


# ---------------------------------------------------------------------------------------------
# Seed corpus.
# ---------------------------------------------------------------------------------------------
SEEDS = (  # (fourcc, extension, frames)
    ("mp4v", ".mp4", 6),
    ("mp4v", ".mov", 4),
    ("MJPG", ".avi", 3),
    ("XVID", ".avi", 5),
    ("HFYU", ".avi", 2),
    ("FFV1", ".mkv", 4),
    ("MJPG", ".mkv", 3),
    ("VP80", ".webm", 4),
    ("VP90", ".webm", 4),
    ("mp4v", ".mp4", 1),
)


def _faststart(data: bytes) -> bytes:
    """An MP4 as OpenCV writes it (ftyp, free, mdat, moov) with moov moved in front of mdat and
    its chunk offsets (stco) shifted: the layout of web downloads."""

    def boxes(buf, start, end):
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", buf[start : start + 8])
            if size < 8:
                return
            yield kind, start, size
            start += size

    top = {kind: (off, size) for kind, off, size in boxes(data, 0, len(data))}
    (moov_off, moov_size), (mdat_off, _) = top[b"moov"], top[b"mdat"]
    moov = bytearray(data[moov_off : moov_off + moov_size])
    at = moov.find(b"stco")
    while at > 0:
        (n,) = struct.unpack(">I", moov[at + 8 : at + 12])
        for k in range(n):
            q = at + 12 + 4 * k
            struct.pack_into(">I", moov, q, struct.unpack(">I", moov[q : q + 4])[0] + moov_size)
        at = moov.find(b"stco", at + 4)
    return data[:mdat_off] + bytes(moov) + data[mdat_off:moov_off] + data[moov_off + moov_size :]


def write_seeds(corpus: Path) -> int:
    """Writes the seed videos into `corpus` (kept if already there); returns how many."""
    import cv2
    import numpy as np

    corpus.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (fourcc, ext, frames) in enumerate(SEEDS):
            path = os.path.join(tmp, f"seed{ext}")
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10.0, (40, 32))
            if not writer.isOpened():
                continue
            for _ in range(frames):
                frame = rng.integers(0, 256, (32, 40, 3), np.uint8)
                frame[:16] //= 8  # some flat area too, so encoders use more than one mode
                writer.write(frame)
            writer.release()
            data = Path(path).read_bytes()
            if not data:
                continue
            (corpus / f"seed-{i:02d}-{fourcc}{ext}").write_bytes(data)
            written += 1
            if ext == ".mp4" and frames > 1:
                (corpus / f"seed-{i:02d}-{fourcc}-faststart{ext}").write_bytes(_faststart(data))
                written += 1
    return written


# ---------------------------------------------------------------------------------------------
# The target.
# ---------------------------------------------------------------------------------------------
class Target:
    """Writes each input to one temporary .mp4 and decodes it with limits."""

    def __init__(self, video_module):
        self.video = video_module
        self.limits = video_module.Limits(
            max_frame_pixels=1920 * 1080,
            min_frame_side=1,
            max_duration_us=60 * 1_000_000,
            max_decoded_frames=500,
        )
        self.dir = tempfile.mkdtemp(prefix="perfnet-fuzz-")
        self.path = os.path.join(self.dir, "input.mp4")

    def __call__(self, data: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(data)
        # The first byte picks a window, so window handling is fuzzed too.
        start_us, end_us = 0, None
        if data and data[0] % 4 == 1:
            start_us, end_us = 100_000, 400_000
        elif data and data[0] % 4 == 2:
            start_us = 1_000_000
        try:
            for _ in self.video.iter_frames(
                self.path, start_us, end_us, fps=25.0, short_side=32, pose_short_side=48,
                limits=self.limits,
            ):  # fmt: skip
                pass
        except (self.video.VideoError, ValueError):
            pass  # the documented outcomes for a bad input

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """libFuzzer-style `-name=value` flags and the other arguments."""
    flags, rest = {}, []
    for arg in argv:
        if arg.startswith("-") and "=" in arg and not arg.startswith("--"):
            name, value = arg.split("=", 1)
            flags[name] = value
        else:
            rest.append(arg)
    return flags, rest


def run_atheris(argv: list[str], corpus: Path, findings: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["pipelines"]):
        from pipelines.stages import video
    import cv2

    cv2.setNumThreads(1)
    target = Target(video)
    flags, rest = _flags(argv)
    args = [sys.argv[0]] + [f"{k}={v}" for k, v in {**DEFAULTS, **flags}.items()]
    args.append(f"-artifact_prefix={findings}/")
    inputs = [a for a in rest if not a.startswith("-")]
    args += [a for a in rest if a.startswith("-")]
    args += inputs or [str(corpus)]
    atheris.Setup(args, target)
    atheris.Fuzz()


# ---------------------------------------------------------------------------------------------
# Without atheris: random mutations, each input in a worker process with a time limit.
# ---------------------------------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random, max_len: int) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(7)
        if not buf:
            buf += rng.randbytes(rng.randint(1, 64))
        elif op == 0:  # flip bits
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # a random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:  # an interesting 32-bit value (box sizes, counts, rates)
            i = rng.randrange(max(1, len(buf) - 3))
            v = rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 8, 16])
            buf[i : i + 4] = struct.pack(">I", v)
        elif op == 3:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 4:  # delete a chunk
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randint(1, 256)]
        elif op == 5:  # duplicate a chunk
            i = rng.randrange(len(buf))
            j = rng.randrange(len(buf))
            buf[j:j] = buf[i : i + rng.randint(1, 256)]
        else:  # random bytes inserted
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 32))
    return bytes(buf[:max_len])


def _worker(conn, rss_limit_mb: int) -> None:
    limit = rss_limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit * 4, limit * 4))  # virtual: generous
    import cv2

    from pipelines.stages import video

    cv2.setNumThreads(1)
    target = Target(video)
    try:
        while True:
            data = conn.recv_bytes()
            try:
                target(data)
                conn.send(("ok", ""))
            except BaseException as e:  # noqa: BLE001 - reported to the parent as a finding
                conn.send(("error", f"{type(e).__name__}: {e}"[:2000]))
    except EOFError:
        pass
    finally:
        target.close()


def run_plain(argv: list[str], corpus: Path, findings: Path) -> int:
    import multiprocessing as mp

    flags, rest = _flags(argv)
    settings = {**DEFAULTS, **flags}
    timeout = float(settings["-timeout"])
    total = float(settings.get("-max_total_time", "60"))
    max_len = int(settings["-max_len"])
    rng = random.Random(int(settings.get("-seed", "0")) or None)
    inputs = [Path(a) for a in rest if not a.startswith("-")]
    replay = [p for p in inputs if p.is_file()]
    pool = [p.read_bytes() for p in (replay or sorted(corpus.iterdir()))]
    ctx = mp.get_context("fork")

    def start():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, int(settings["-rss_limit_mb"])))
        proc.start()
        return proc, parent

    proc, conn = start()
    t0, runs, found = time.monotonic(), 0, 0
    queue = list(pool) if replay else []
    while time.monotonic() - t0 < total and (not replay or queue):
        data = queue.pop(0) if queue else mutate(rng.choice(pool), rng, max_len)
        conn.send_bytes(data)
        runs += 1
        kind, detail = None, ""
        if conn.poll(timeout):
            try:
                status, detail = conn.recv()
                if status == "error":
                    kind = "crash"
            except EOFError:
                kind = "crash"
        else:
            kind, detail = "timeout", f"no answer in {timeout:g} s"
        if kind is None and not proc.is_alive():
            kind = "crash"
        if kind is not None:
            proc.join(0.5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            if proc.exitcode is not None and proc.exitcode < 0:
                detail = detail or f"worker killed by {signal.Signals(-proc.exitcode).name}"
            found += 1
            name = f"{kind}-{hashlib.sha1(data).hexdigest()}"
            (findings / name).write_bytes(data)
            print(f"FINDING {name}: {detail}", flush=True)
            proc, conn = start()
        if runs % 200 == 0:
            print(f"#{runs} {runs / (time.monotonic() - t0):.0f} exec/s, {found} findings",
                  flush=True)  # fmt: skip
    conn.close()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    print(f"done: {runs} inputs in {time.monotonic() - t0:.0f} s, {found} findings in {findings}")
    return 1 if found else 0


def campaign(argv: list[str], findings: Path) -> int:
    """libFuzzer stops at its first finding: run it in child processes until -max_total_time
    is spent, each child going on from the corpus the earlier ones grew. Each finding gets a
    `.txt` beside it with the end of the child's output (the Python traceback or the stack)."""
    flags, _ = _flags(argv)
    total = float(flags.get("-max_total_time", "60"))
    t0, found = time.monotonic(), []
    while (left := total - (time.monotonic() - t0)) > 5:
        args = [a for a in argv if not a.startswith("-max_total_time=")]
        cmd = [sys.executable, __file__, "--once", f"-max_total_time={int(left)}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        lines = (proc.stdout + proc.stderr).splitlines()
        stats = [x for x in lines if x.startswith("#") and " cov: " in x]
        if stats:
            print(stats[-1], flush=True)
        artifact = next((x.rsplit(" ", 1)[-1] for x in lines if "Test unit written to" in x), "")
        if not artifact:
            break  # ran to the time limit without a finding
        Path(artifact + ".txt").write_text("\n".join(lines[-60:]) + "\n")
        reason = next((x for x in reversed(lines) if x.startswith("SUMMARY:")), "?")
        found.append(artifact)
        print(f"FINDING {artifact}: {reason}", flush=True)
    print(f"done in {time.monotonic() - t0:.0f} s: {len(found)} findings in {findings}")
    for path in found:
        print(f"  {path} (log: {path}.txt)")
    return 1 if found else 0


def main(argv: list[str]) -> int:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's complaints: quiet
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    plain = "--plain" in argv
    once = "--once" in argv
    argv = [a for a in argv if a not in ("--plain", "--once")]
    corpus, findings = cache_dir() / "corpus", cache_dir() / "findings"
    findings.mkdir(parents=True, exist_ok=True)
    if not corpus.exists() or not any(corpus.iterdir()):
        print(f"seed corpus: {write_seeds(corpus)} videos in {corpus}", flush=True)
    if not plain:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: random mutations instead (--plain)", flush=True)
            plain = True
    if plain:
        return run_plain(argv, corpus, findings)
    replay = any(not a.startswith("-") for a in argv)
    if once or replay:
        run_atheris(argv, corpus, findings)
        return 0
    return campaign(argv, findings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
