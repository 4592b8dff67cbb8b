"""The real job, built for Dataflow and translated without submitting it (`--dry_run=True`).

What a user does: a local Kinetics manifest, videos and outputs on gs://, the embedded pose
model from the local cache (or one on gs://), and the code shipped either with `--setup_file` or
in a custom SDK container. GCS is a real local emulator; Google's network is never contacted.
"""

from __future__ import annotations

import hashlib
import socket
import tarfile

import pytest

from tests.conftest import GCS_BUCKET as BUCKET

PROJECT = "perfnet-dry-run"  # Beam checks the syntax of project ids (6-30 chars) and buckets
IMAGE = "us-central1-docker.pkg.dev/perfnet-dry-run/beam/perfnet-beam:0.1.0"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
KINETICS_CSV = (
    "label,youtube_id,time_start,time_end,split\n"
    "abseiling,-3B32lodo2M,59,69,train\n"
    '"air drumming",--nQbRBEz2s,104,114,val\n'
    ",zzz_test_id,1,11,test\n"
)
# Steps of the job that every version of it has: its phases (pipelines/job/transforms.py) and
# the steps inside them that runners and users see by name.
STEPS = {
    "ProcessRows",
    "ProcessRows/Spread",
    "ProcessRows/ProcessVideos",
    "CollectParts",
    "WriteShards",
    "WriteShards/GroupShards",
    "WriteFailures",
    "WriteInfo",
}


@pytest.fixture
def no_network(monkeypatch):
    """Refuses, and records, every connection and name lookup beyond this machine."""
    attempts: list[str] = []

    def local(host) -> bool:
        return isinstance(host, str) and (host in LOOPBACK or host.startswith("127."))

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guard(address):
        if isinstance(address, tuple) and not local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"test_dataflow: no network beyond loopback ({address})")

    def connect(self, address):
        guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        guard(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not local(host.decode() if isinstance(host, bytes) else host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"test_dataflow: no name lookups ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def _dry_run(monkeypatch, argv: list[str]):
    """pipelines.preprocess.run(argv) with --dry_run; returns (runner, job, options, info)."""
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    from pipelines.preprocess import run

    seen = {}
    translate = DataflowRunner.run_pipeline

    def capture(self, pipeline, options):
        result = translate(self, pipeline, options)
        seen.update(runner=self, job=result.job, options=options)
        return result

    monkeypatch.setattr(DataflowRunner, "run_pipeline", capture)
    info = run(argv)
    assert info["dry_run"] is True
    assert "job" in seen, "DataflowRunner never ran: the job was not built for Dataflow"
    return seen["runner"], seen["job"], seen["options"], info


def _argv(tmp_path, output_dir: str, *extra: str) -> list[str]:
    manifest = tmp_path / "kinetics_train.csv"
    manifest.write_text(KINETICS_CSV, encoding="utf-8")
    return [
        f"--input={manifest}", "--manifest_format=kinetics",
        f"--video_root=gs://{BUCKET}/kinetics400", f"--output_dir={output_dir}",
        "--dataset_name=k400", "--runner=DataflowRunner", "--dry_run=True",
        f"--project={PROJECT}", "--region=us-central1", f"--temp_location=gs://{BUCKET}/tmp",
        "--experiments=use_runner_v2", "--max_num_workers=8", "--machine_type=n2-standard-4",
        *extra,
    ]  # fmt: skip


def _environment(runner):
    """(container image, {staged name: local file}) of the job's one SDK environment."""
    from apache_beam.portability.api import beam_runner_api_pb2

    envs = list(runner.proto_pipeline.components.environments.values())
    assert len(envs) == 1, [e.urn for e in envs]
    (env,) = envs
    assert env.urn == "beam:env:docker:v1"
    image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
    staged = {}
    for dep in env.dependencies:
        path = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload)
        staged[name.staged_name] = path
    return image, staged


def _process_fn(runner):
    """The ProcessVideoFn instance the workers will unpickle."""
    from apache_beam.internal import pickler
    from apache_beam.portability.api import beam_runner_api_pb2

    (transform,) = [
        t
        for t in runner.proto_pipeline.components.transforms.values()
        if t.unique_name.startswith("ProcessRows/ProcessVideos/")
        and t.spec.urn == "beam:transform:pardo:v1"
    ]
    payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
    return pickler.loads(payload.do_fn.payload)[0]


def _objects(prefix: str) -> list[str]:
    from pipelines.storage import output

    return output.list_files(f"{prefix}**")


def _sha256(url: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(url) as f:
        return hashlib.sha256(f.read()).hexdigest()


def _check_common(runner, job, options, info, output_dir, attempts):
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        GoogleCloudOptions,
        WorkerOptions,
    )

    assert attempts == []  # nothing beyond loopback (the emulator) was contacted
    assert job.proto.type_.name == "JOB_TYPE_BATCH"
    names = {t.unique_name for t in runner.proto_pipeline.components.transforms.values()}
    assert STEPS <= names, sorted(names)
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region) == (PROJECT, "us-central1")
    assert gcp.temp_location.startswith(f"gs://{BUCKET}/tmp/beamapp-")  # a folder per job
    workers = options.view_as(WorkerOptions)
    assert (workers.max_num_workers, workers.machine_type) == (8, "n2-standard-4")
    assert "use_runner_v2" in options.view_as(DebugOptions).experiments
    # A dry run runs nothing: no upload to temp_location, no records, no description.
    assert _objects(f"gs://{BUCKET}/tmp/") == []
    written = _objects(f"{output_dir}/")
    assert not [p for p in written if p.endswith((".tfrecord", "dataset_info.json"))], written
    assert info.get("dry_run") is True


def test_dataflow_dry_run_with_setup_file(tmp_path, monkeypatch, gcs_emulator, no_network):
    from pipelines import assets

    output_dir = f"gs://{BUCKET}/out-setup"
    runner, job, options, info = _dry_run(
        monkeypatch, _argv(tmp_path, output_dir, "--setup_file=./setup.py")
    )
    _check_common(runner, job, options, info, output_dir, no_network)
    image, staged = _environment(runner)
    assert image.endswith("/beam_python3.11_sdk:2.77.0")  # Dataflow's image of this Beam
    # The package reaches the workers as an sdist of setup.py that they pip-install.
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        members = set(sdist.getnames())
    for name in (
        "setup.py", "setup.cfg", "pipelines/preprocess.py", "pipelines/job/run.py",
        "pipelines/manifests/__init__.py",
        "pipelines/stages/clip.py", "schemas/media_sequence.py", "render/__init__.py",
        "flow/__init__.py",
    ):  # fmt: skip
        assert f"perfnet-data-0.1.0/{name}" in members, name
    # The embedded pose model, local to the launcher, is copied next to the outputs on gs://
    # and the workers read it from there (checked against the launcher's sha256).
    fn = _process_fn(runner)
    sha = assets.DEFAULT_POSE_MODEL.sha256
    assert fn._model_path == f"{output_dir}/.staging/pose-{sha[:16]}.tflite"
    assert fn._model_sha == sha and _sha256(fn._model_path) == sha


def test_dataflow_dry_run_with_custom_container(
    tmp_path, monkeypatch, gcs_emulator, no_network, assets_ready
):
    from apache_beam.io.filesystems import FileSystems

    from pipelines import assets

    model = f"gs://{BUCKET}/models/movenet.tflite"
    with open(assets_ready["model"], "rb") as src, FileSystems.create(model) as dst:
        dst.write(src.read())
    output_dir = f"gs://{BUCKET}/out-image"
    runner, job, options, info = _dry_run(
        monkeypatch,
        _argv(tmp_path, output_dir, f"--sdk_container_image={IMAGE}", f"--pose_model={model}"),
    )
    _check_common(runner, job, options, info, output_dir, no_network)
    image, staged = _environment(runner)
    assert image == IMAGE
    assert "workflow.tar.gz" not in staged  # the code is in the image
    fn = _process_fn(runner)  # a pose model on gs:// is read by the workers where it is
    assert (fn._model_path, fn._model_sha) == (model, assets.DEFAULT_POSE_MODEL.sha256)
    assert not [p for p in _objects(f"{output_dir}/") if p.endswith(".tflite")]
