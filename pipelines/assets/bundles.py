"""MediaPipe pose landmarker bundles (`.task` files) built from BlazePose's legacy TFLite files.

MediaPipe Tasks' `PoseLandmarker` loads a zip holding `pose_detector.tflite` and
`pose_landmarks_detector.tflite`. The legacy files in the mediapipe wheel and in
`@mediapipe/pose` lack what it needs: TFLite model metadata whose input tensor carries
`NormalizationOptions`. `add_tflite_metadata` rewrites a TFLite flatbuffer with that metadata
(tensor buffers kept aligned), and `build_pose_bundle` stores both models uncompressed in a zip
with fixed timestamps and aligned member data, so that a bundle is byte-for-byte reproducible
and its sha256 can be pinned. Needs `flatbuffers` and numpy, and the flatbuffer schema modules
of the installed mediapipe package (loaded from their files, without importing mediapipe).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import struct
import zipfile
from pathlib import Path
from types import ModuleType

from pipelines.assets.cache import AssetError

# Member names that MediaPipe's PoseLandmarker looks for inside a `.task` bundle.
POSE_DETECTOR_MEMBER = "pose_detector.tflite"
POSE_LANDMARKS_MEMBER = "pose_landmarks_detector.tflite"

# Fixed zip entry time (the earliest a zip can store) so that rebuilds are byte-identical.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Offset alignment (bytes) of each member's data inside the bundle, and of each tensor buffer
# inside a rewritten TFLite file: 16 is what the TFLite converter uses; 64 keeps both aligned
# to a cache line when MediaPipe maps the members in place.
_ZIP_MEMBER_ALIGN = 64
_TFLITE_BUFFER_ALIGN = 16
_ZIP_ALIGN_EXTRA_ID = 0xD935  # the "alignment" extra-field id that Android's zipalign writes

_TFLITE_FILE_ID = b"TFL3"  # flatbuffer file identifier of a TFLite model
_METADATA_FILE_ID = b"M001"  # flatbuffer file identifier of TFLite model metadata
_METADATA_BUFFER_NAME = "TFLITE_METADATA"  # Model.metadata entry MediaPipe's extractor reads
# Oldest metadata parser that understands what we write (NormalizationOptions, ImageProperties
# and Stats all exist since metadata schema 1.0.0). MediaPipe refuses metadata whose
# min_parser_version is newer than its own parser.
_METADATA_MIN_PARSER_VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class TfliteSpec:
    """One TFLite file of a bundle: where it comes from and the metadata to add."""

    member: str  # name inside the bundle
    source: str  # path inside its package (the mediapipe wheel, or @mediapipe/pose)
    name: str
    description: str
    input_description: str
    # Input normalization: tensor = (pixel - mean) / std, pixel in [0, 255].
    mean: float
    std: float
    output_names: tuple[str, ...]


DETECTOR_SPEC = TfliteSpec(
    member=POSE_DETECTOR_MEMBER,
    source="mediapipe/modules/pose_detection/pose_detection.tflite",
    name="BlazePose detector",
    description="Detects people: 2254 SSD anchors, box and 4 keypoints each, 224x224 input.",
    input_description="RGB image, 224x224, values in [-1, 1].",
    mean=127.5,
    std=127.5,
    output_names=("raw_boxes", "raw_scores"),
)
FULL_LANDMARKS_SPEC = TfliteSpec(
    member=POSE_LANDMARKS_MEMBER,
    source="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
    name="BlazePose GHUM 3D landmarks (full)",
    description="33 pose landmarks of one person in a 256x256 crop.",
    input_description="RGB image, 256x256, values in [0, 1].",
    mean=0.0,
    std=255.0,
    output_names=(
        "landmarks",
        "pose_flag",
        "segmentation",
        "heatmap",
        "world_landmarks",
    ),
)
# The heavy landmark model: same inputs and outputs as the full one, from @mediapipe/pose.
HEAVY_LANDMARKS_SPEC = dataclasses.replace(
    FULL_LANDMARKS_SPEC,
    source="package/pose_landmark_heavy.tflite",
    name="BlazePose GHUM 3D landmarks (heavy)",
)
BUNDLE_LICENSE = "Apache-2.0 (MediaPipe BlazePose models, from the mediapipe 0.10.21 wheel)"
HEAVY_BUNDLE_LICENSE = (
    "Apache-2.0 (MediaPipe BlazePose models: detector from the mediapipe 0.10.21 wheel, heavy "
    "landmarks from @mediapipe/pose 0.5.1675469404)"
)


def _load_flatbuffer_schemas() -> tuple[ModuleType, ModuleType]:
    """The TFLite model and metadata flatbuffer modules that mediapipe's wheel ships.

    `mediapipe/tasks/metadata/{schema,metadata_schema}_py_generated.py` need only `flatbuffers`
    and numpy. They are loaded from their files so that `mediapipe/__init__.py` (which imports
    TensorFlow when it is installed, ~3 s) does not run during the set-up step.
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("the mediapipe package is not installed; it is needed to build the bundle")
    root = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "metadata"
    modules = []
    for stem in ("schema_py_generated", "metadata_schema_py_generated"):
        path = root / f"{stem}.py"
        mod_spec = importlib.util.spec_from_file_location(f"_perfnet_{stem}", path)
        if mod_spec is None or mod_spec.loader is None or not path.is_file():
            raise AssetError(f"mediapipe's flatbuffer schema module {str(path)!r} is missing")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def _metadata_flatbuffer(spec: TfliteSpec, model, md, license_text: str) -> bytes:
    """Serialized `ModelMetadata` (file id M001) for the TFLite model `model` (a ModelT).

    What MediaPipe Tasks reads from it: the first input tensor's `NormalizationOptions`
    (required for float32 image inputs; image preprocessing fails without them) and its
    `ImageProperties` (must say RGB if present). The rest documents the model.
    """
    import flatbuffers

    subgraph = model.subgraphs[0]
    (input_index,) = subgraph.inputs
    _, height, width, _ = (int(d) for d in subgraph.tensors[input_index].shape)

    size = md.ImageSizeT()
    size.width, size.height = width, height
    props = md.ImagePropertiesT()
    props.colorSpace = md.ColorSpaceType.RGB
    props.defaultSize = size
    content = md.ContentT()
    content.contentPropertiesType = md.ContentProperties.ImageProperties
    content.contentProperties = props
    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = [spec.mean], [spec.std]
    unit = md.ProcessUnitT()
    unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
    unit.options = norm
    stats = md.StatsT()
    stats.min = [(0.0 - spec.mean) / spec.std]
    stats.max = [(255.0 - spec.mean) / spec.std]
    image = md.TensorMetadataT()
    image.name = "image"
    image.description = spec.input_description
    image.content = content
    image.processUnits = [unit]
    image.stats = stats

    if len(subgraph.outputs) != len(spec.output_names):
        raise AssetError(
            f"{spec.source}: expected {len(spec.output_names)} outputs, "
            f"found {len(subgraph.outputs)}"
        )
    outputs = []
    for name in spec.output_names:
        out = md.TensorMetadataT()
        out.name = name
        outputs.append(out)

    graph = md.SubGraphMetadataT()
    graph.inputTensorMetadata = [image]
    graph.outputTensorMetadata = outputs
    meta = md.ModelMetadataT()
    meta.name = spec.name
    meta.description = spec.description
    meta.license = license_text
    meta.subgraphMetadata = [graph]
    meta.minParserVersion = _METADATA_MIN_PARSER_VERSION

    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder), file_identifier=_METADATA_FILE_ID)
    return bytes(builder.Output())


class _AlignedBuffer:
    """Packs a TFLite `Buffer` with its data vector aligned like the TFLite converter does.

    The generated `BufferT.Pack` aligns data to 1 byte only; weights read in place (mmap) are
    better aligned, as in the original file.
    """

    def __init__(self, buffer, schema):
        self._buffer = buffer
        self._schema = schema

    def Pack(self, builder):  # noqa: N802 - the name the generated ModelT.Pack calls
        s, buf = self._schema, self._buffer
        data = None
        if buf.data is not None:
            raw = bytes(memoryview(buf.data))
            builder.StartVector(1, len(raw), _TFLITE_BUFFER_ALIGN)
            builder.head -= len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data = builder.EndVector()
        s.BufferStart(builder)
        if data is not None:
            s.BufferAddData(builder, data)
        if buf.offset:
            s.BufferAddOffset(builder, buf.offset)
        if buf.size:
            s.BufferAddSize(builder, buf.size)
        return s.BufferEnd(builder)


def add_tflite_metadata(
    model_bytes: bytes, spec: TfliteSpec, license_text: str = BUNDLE_LICENSE
) -> bytes:
    """Returns the TFLite model `model_bytes` with MediaPipe-readable metadata for `spec`.

    An existing `TFLITE_METADATA` entry (the legacy detector carries one copied from a face
    detector) is replaced; other metadata entries (`min_runtime_version`, ...) are kept. The
    result is deterministic for given inputs.
    """
    import flatbuffers

    schema, md = _load_flatbuffer_schemas()
    if model_bytes[4:8] != _TFLITE_FILE_ID:
        raise AssetError(
            f"{spec.source}: not a TFLite flatbuffer (identifier {model_bytes[4:8]!r})"
        )
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    payload = _metadata_flatbuffer(spec, model, md, license_text)

    import numpy as np

    entries = [m for m in (model.metadata or []) if _name(m.name) == _METADATA_BUFFER_NAME]
    if entries:
        model.buffers[entries[0].buffer].data = np.frombuffer(payload, dtype=np.uint8)
        for extra in entries[1:]:
            model.metadata.remove(extra)
    else:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = _METADATA_BUFFER_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]

    model.buffers = [_AlignedBuffer(b, schema) for b in model.buffers]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=_TFLITE_FILE_ID)
    return bytes(builder.Output())


def _name(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def _aligned_zip_info(name: str, header_offset: int) -> zipfile.ZipInfo:
    """A stored zip entry with fixed metadata whose data starts at a multiple of 64 bytes."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, so that external_attr means the same on every platform
    info.external_attr = 0o644 << 16
    # Local header: 30 fixed bytes + name + extra; the extra field pads the data start.
    base = header_offset + 30 + len(name.encode("utf-8")) + 6
    pad = -base % _ZIP_MEMBER_ALIGN
    info.extra = struct.pack("<HHH", _ZIP_ALIGN_EXTRA_ID, 2 + pad, _ZIP_MEMBER_ALIGN) + bytes(pad)
    return info


def build_pose_bundle(
    detector: bytes,
    landmarks: bytes,
    landmarks_spec: TfliteSpec = FULL_LANDMARKS_SPEC,
    license_text: str = BUNDLE_LICENSE,
) -> bytes:
    """Builds a pose landmarker bundle from BlazePose's detector and a landmark TFLite file.

    Args:
      detector: the legacy `pose_detection.tflite` bytes.
      landmarks: a legacy `pose_landmark_{full,heavy}.tflite`, described by `landmarks_spec`.
      license_text: the license line written into both models' metadata.

    Returns:
      The `.task` zip: `pose_detector.tflite` then `pose_landmarks_detector.tflite`, both
      stored uncompressed, with fixed timestamps and 64-byte aligned data, each model carrying
      input-normalization metadata. Identical bytes for identical inputs.
    """
    members = [
        (POSE_DETECTOR_MEMBER, add_tflite_metadata(detector, DETECTOR_SPEC, license_text)),
        (POSE_LANDMARKS_MEMBER, add_tflite_metadata(landmarks, landmarks_spec, license_text)),
    ]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, data in members:
            bundle.writestr(_aligned_zip_info(name, out.tell()), data)
    return out.getvalue()
