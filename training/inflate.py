"""ImageNet-pretrained 2D weights into the video backbones, by inflation (S3D-G, R3D50-G, STM).

The S3D-G paper (Xie et al. 2018, section 4) initializes S3D-G from an ImageNet Inception-v1;
I3D (Carreira and Zisserman 2017) and the ResNet-based models start from an ImageNet ResNet.
This module copies such a 2D network's weights into our 3D layers through an explicit name
mapping, from a file the user supplies (nothing is downloaded):

- `s3dg_inception_v1()`: S3D-G <- TF-Slim's `inception_v1` (GoogLeNet with batch norm), as its
  ImageNet checkpoint `inception_v1_2016_08_28.tar.gz` names the variables
  (`InceptionV1/Conv2d_1a_7x7/weights`, `InceptionV1/Mixed_3b/Branch_1/Conv2d_0b_3x3/BatchNorm/
  moving_mean`, ...; names as `research/slim/nets/inception_v1.py` of tensorflow/models makes
  them, including its `Mixed_5b/Branch_2/Conv2d_0a_3x3`, where every other block says
  `Conv2d_0b_3x3`). Table: `S3DG_INCEPTION_V1_TABLE`.
- `r3d50g_resnet50()`: R3D50-G <- Keras' ImageNet ResNet50 (`keras.applications.ResNet50`,
  layers `conv1_conv`, `conv{s}_block{i}_{0,1,2,3}_{conv,bn}`). Table:
  `R3D50G_RESNET50_TABLE`.
- `stm_resnet50()`: STM <- the same ResNet50; STM's layers carry Keras' names already.

`MAPPINGS` holds the three by name, `DEFAULT_MAPPING` the one each backbone gets.

Rules (`inflate_into`):

- A k x k 2D kernel `[k, k, cin, cout]` becomes a `[t, k, k, cin, cout]` 3D kernel by
  I3D's rule: repeated t times along time and divided by t, so a static clip (one frame
  repeated) gives the 2D network's pre-activations wherever the temporal window lies inside the
  clip (`inflate_kernel`). t = 1 (S3D-G's 1 x k x k spatial parts, every 1x1x1 and 1x3x3
  convolution of R3D50-G) just adds the time axis; t > 1: R3D50-G's conv1 (5x7x7) and the
  t_i x 1 x 1 first convolution of its cells (t_i = 3).
- S3D-G's separable convolutions (`_sep_conv`: the 1 x k x k spatial convolution, its batch norm
  and ReLU, then the k x 1 x 1 temporal one, its batch norm and ReLU): the 2D kernel and batch
  norm go to the spatial part; the temporal kernel is set to the identity
  (`identity_temporal_kernel`: 1 at the centre tap for input channel = output channel, 0
  elsewhere), so on a static clip the separable convolution starts as the 2D one.
- Batch norm: beta, moving mean and moving variance are copied; gamma too where the 2D network
  has one (TF-Slim's Inception-v1 has none, `scale=False`: gamma = 1). The 2D network's epsilon
  is kept exactly by moving the difference into the variance: `var' = var + eps_2d - eps_3d`
  (slim 1e-3, Keras' ResNet50 1.001e-5, ours `models.BN_EPSILON` 1e-5), so
  `(x - mean) / sqrt(var' + eps_3d)` is the 2D network's normalization. A 2D convolution bias
  (Keras' ResNet50 has them) is folded into the following batch norm: `mean' = mean - bias`
  (exact in inference; in training the batch mean absorbs it anyway).
- Input convention: our clips are RGB in [-1, 1] (`training.inputs`), as TF-Slim's inception
  preprocessing; Keras' ImageNet ResNet50 was trained on caffe-preprocessed images (BGR pixels
  in [0, 255] minus the ImageNet mean), so its first kernel is rewritten for our inputs
  (`caffe_to_unit`: input channels reversed, x 127.5, and the mean offset's response folded
  into conv1's batch-norm mean; exact away from the zero-padded borders).
- Input channels: the 2D network reads RGB. A model on another channel count (flow: 2) gets in
  its first convolution the RGB kernel (after the rewriting above, without the mean offset)
  averaged over the 3 input channels and repeated for each of its channels (TSN's
  cross-modality initialization, Wang et al. 2016); the report notes it.
- Left at their fresh initialization (listed in the report): feature gating (no 2D
  counterpart), the batch norm of S3D-G's temporal parts (gamma 1, beta 0, moving mean 0,
  moving variance 1: in inference `x / sqrt(1 + eps)`, about the identity, so a static clip
  goes through the inflated block as through the 2D one; in training it normalizes with the
  batch statistics like any new layer; copying the spatial part's statistics would describe
  another tensor), STM's channel-wise temporal and motion (CMM) layers, and the classifier
  head. The head is new whatever the source (another label set).

Strict by default: every 2D variable a mapped layer needs must be in the source (the error
lists the missing names; `allow_missing=True` leaves those layers at init and reports them);
every shape is checked before anything is assigned (the error names the 3D layer, the 2D
variable and both shapes, and says when the model's `width_multiplier` is the cause: ImageNet
weights fit width 1.0 only; or that the layers before differ, e.g. S3D-G without a middle
Inception block). Mapping entries for layers the model does not have (S3D-G with the first n
Inception blocks only, fewer residual cells than ResNet50) are skipped and reported.

Sources (`open_source`, `format`): a TF checkpoint (`tf.train.load_checkpoint`: a prefix or a
directory; slim's `inception_v1.ckpt`), a Keras weights file of `keras.applications.ResNet50`
(`.weights.h5`, or the legacy `.h5` that `keras.applications` downloads; read by building
`ResNet50(weights=None)` and `load_weights`, then by layer name as `<layer>/<weight>`), or an
`.npz` of name -> array (any names the mapping uses). `auto` picks by the file name. Local or
gs:// paths.

Structural differences the weights cross (documented, not corrected): Keras' ResNet50 is v1
(stride 2 in the first 1x1 convolution of a stage) where R3D50-G and STM stride the 3x3
(v1.5), and it pads conv1 and pool1 symmetrically where ours pad "same".
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from training.config import INIT_2D_FORMATS, RESNET50_DEPTHS  # blocks per stage conv2..conv5

log = logging.getLogger(__name__)

REPORT_FILENAME = "init_2d.json"
FORMATS = INIT_2D_FORMATS

SLIM_SCOPE = "InceptionV1"
SLIM_BN_EPSILON = 1e-3  # inception_utils.inception_arg_scope(batch_norm_epsilon=0.001)
KERAS_RESNET50_BN_EPSILON = 1.001e-5  # keras.applications.ResNet50's BatchNormalization
# Input conventions of a 2D network's first layer (`Mapping2D.input_convention`):
# `unit`: RGB in [-1, 1], ours (`training.inputs`) and TF-Slim's inception preprocessing;
# `caffe`: BGR pixels in [0, 255] minus the ImageNet mean (keras.applications.resnet50's
# `preprocess_input`), which `caffe_to_unit` rewrites for our inputs.
INPUT_CONVENTIONS = ("unit", "caffe")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
UNIT_TO_PIXELS = 127.5  # pixel = 127.5 * (u + 1) for u in [-1, 1]

# Kinds of a table row.
CONV = "conv"  # 3D `{p}_conv` + `{p}_bn` <- the 2D convolution and its batch norm
SEP = "sep"  # S3D-G separable: `{p}_spatial_{conv,bn}` <- 2D; `{p}_temporal_conv` = identity

# S3D-G <- TF-Slim inception_v1: (3D layer prefix, 2D scope under `InceptionV1/`, kind). A
# CONV row maps `{p}_conv.kernel <- {scope}/weights` and `{p}_bn.{beta, moving_mean,
# moving_variance} <- {scope}/BatchNorm/{...}` (gamma from `{scope}/BatchNorm/gamma` if present,
# else 1); a SEP row maps the same into `{p}_spatial_conv` / `{p}_spatial_bn` and sets
# `{p}_temporal_conv` to the identity.
S3DG_INCEPTION_V1_TABLE: tuple[tuple[str, str, str], ...] = (
    ("Conv3d_1a", "Conv2d_1a_7x7", SEP),
    ("Conv3d_2b", "Conv2d_2b_1x1", CONV),
    ("Conv3d_2c", "Conv2d_2c_3x3", SEP),
    ("Mixed_3b_b0", "Mixed_3b/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_3b_b1a", "Mixed_3b/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_3b_b1b", "Mixed_3b/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_3b_b2a", "Mixed_3b/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_3b_b2b", "Mixed_3b/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_3b_b3", "Mixed_3b/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_3c_b0", "Mixed_3c/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_3c_b1a", "Mixed_3c/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_3c_b1b", "Mixed_3c/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_3c_b2a", "Mixed_3c/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_3c_b2b", "Mixed_3c/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_3c_b3", "Mixed_3c/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_4b_b0", "Mixed_4b/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_4b_b1a", "Mixed_4b/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_4b_b1b", "Mixed_4b/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_4b_b2a", "Mixed_4b/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_4b_b2b", "Mixed_4b/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_4b_b3", "Mixed_4b/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_4c_b0", "Mixed_4c/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_4c_b1a", "Mixed_4c/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_4c_b1b", "Mixed_4c/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_4c_b2a", "Mixed_4c/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_4c_b2b", "Mixed_4c/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_4c_b3", "Mixed_4c/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_4d_b0", "Mixed_4d/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_4d_b1a", "Mixed_4d/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_4d_b1b", "Mixed_4d/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_4d_b2a", "Mixed_4d/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_4d_b2b", "Mixed_4d/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_4d_b3", "Mixed_4d/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_4e_b0", "Mixed_4e/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_4e_b1a", "Mixed_4e/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_4e_b1b", "Mixed_4e/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_4e_b2a", "Mixed_4e/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_4e_b2b", "Mixed_4e/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_4e_b3", "Mixed_4e/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_4f_b0", "Mixed_4f/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_4f_b1a", "Mixed_4f/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_4f_b1b", "Mixed_4f/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_4f_b2a", "Mixed_4f/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_4f_b2b", "Mixed_4f/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_4f_b3", "Mixed_4f/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_5b_b0", "Mixed_5b/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_5b_b1a", "Mixed_5b/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_5b_b1b", "Mixed_5b/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_5b_b2a", "Mixed_5b/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_5b_b2b", "Mixed_5b/Branch_2/Conv2d_0a_3x3", SEP),  # sic: slim's name ("0a")
    ("Mixed_5b_b3", "Mixed_5b/Branch_3/Conv2d_0b_1x1", CONV),
    ("Mixed_5c_b0", "Mixed_5c/Branch_0/Conv2d_0a_1x1", CONV),
    ("Mixed_5c_b1a", "Mixed_5c/Branch_1/Conv2d_0a_1x1", CONV),
    ("Mixed_5c_b1b", "Mixed_5c/Branch_1/Conv2d_0b_3x3", SEP),
    ("Mixed_5c_b2a", "Mixed_5c/Branch_2/Conv2d_0a_1x1", CONV),
    ("Mixed_5c_b2b", "Mixed_5c/Branch_2/Conv2d_0b_3x3", SEP),
    ("Mixed_5c_b3", "Mixed_5c/Branch_3/Conv2d_0b_1x1", CONV),
)

# R3D50-G <- Keras ResNet50, per residual cell: 3D suffix -> 2D suffix of the same block
# (`res{s}_cell{i}_{a,b,c,proj}` <- `conv{s}_block{i}_{1,2,3,0}`; `proj` in cell 1 only), each
# `_conv.kernel <- _conv/kernel` (with `_conv/bias` folded into the batch norm) and
# `_bn.{gamma, beta, moving_mean, moving_variance} <- _bn/{...}`; plus conv1 <- conv1.
R3D50G_RESNET50_CELL = {"a": "1", "b": "2", "c": "3", "proj": "0"}


def _r3d50g_table() -> tuple[tuple[str, str, str], ...]:
    rows = [("conv1", "conv1", CONV)]
    for stage, depth in enumerate(RESNET50_DEPTHS, start=2):
        for i in range(1, depth + 1):
            for ours, keras_suffix in R3D50G_RESNET50_CELL.items():
                if ours == "proj" and i > 1:
                    continue
                rows.append(
                    (f"res{stage}_cell{i}_{ours}", f"conv{stage}_block{i}_{keras_suffix}", CONV)
                )
    return tuple(rows)


def _stm_table() -> tuple[tuple[str, str, str], ...]:
    rows = [("conv1", "conv1", CONV)]
    for stage, depth in enumerate(RESNET50_DEPTHS, start=2):
        for i in range(1, depth + 1):
            for suffix in ("0", "1", "2", "3") if i == 1 else ("1", "2", "3"):
                name = f"conv{stage}_block{i}_{suffix}"
                rows.append((name, name, CONV))
    return tuple(rows)


# (3D layer prefix, 2D layer prefix, kind): 53 rows each (conv1 + 16 cells x 3 + 4 projections).
R3D50G_RESNET50_TABLE = _r3d50g_table()
STM_RESNET50_TABLE = _stm_table()

# 3D weights that may be absent from the source: gamma (-> 1) and the 2D convolution's bias
# (-> nothing to fold).
OPTIONAL_WEIGHTS = ("gamma", "conv_bias")


@dataclasses.dataclass
class Mapping2D:
    """How a 2D network's variables fill a 3D backbone.

    Attributes:
      name: the mapping's name (`MAPPINGS` key).
      backbone: the `model.backbone` it fills.
      network_2d: the 2D network, in words.
      entries: 3D layer name -> {3D weight name -> 2D variable name}. Convolutions: `kernel`;
        batch norms: `gamma`, `beta`, `moving_mean`, `moving_variance`, and `conv_bias`, the
        2D convolution's bias folded into the moving mean. `OPTIONAL_WEIGHTS` may be absent.
      identity: 3D temporal convolutions set to the identity (`identity_temporal_kernel`).
      first_convs: the convolutions that read the clip (in_channels != 3: averaged RGB kernel).
      bn_epsilon: the 2D network's batch-norm epsilon.
      input_convention: what the 2D network's first layer reads (`INPUT_CONVENTIONS`).
    """

    name: str
    backbone: str
    network_2d: str
    entries: dict[str, dict[str, str]]
    identity: tuple[str, ...]
    first_convs: tuple[str, ...]
    bn_epsilon: float
    input_convention: str = "unit"

    def rows(self) -> list[tuple[str, str, str]]:
        """(3D layer, 3D weight, 2D variable) for every entry, then (layer, kernel, identity)."""
        out = [(layer, w, n) for layer, ws in self.entries.items() for w, n in ws.items()]
        return out + [(layer, "kernel", "<identity>") for layer in self.identity]


def _slim_entries(scope: str) -> tuple[dict, dict]:
    base = f"{SLIM_SCOPE}/{scope}"
    conv = {"kernel": f"{base}/weights"}
    bn = {w: f"{base}/BatchNorm/{w}" for w in ("gamma", "beta", "moving_mean", "moving_variance")}
    return conv, bn


def s3dg_inception_v1() -> Mapping2D:
    """S3D-G <- TF-Slim inception_v1 (`S3DG_INCEPTION_V1_TABLE`): 57 convolutions and batch
    norms, 20 temporal convolutions set to the identity."""
    entries: dict[str, dict[str, str]] = {}
    identity = []
    for prefix, scope, kind in S3DG_INCEPTION_V1_TABLE:
        conv, bn = _slim_entries(scope)
        part = f"{prefix}_spatial" if kind == SEP else prefix
        entries[f"{part}_conv"] = conv
        entries[f"{part}_bn"] = bn
        if kind == SEP:
            identity.append(f"{prefix}_temporal_conv")
    return Mapping2D(
        name="s3dg_inception_v1",
        backbone="s3dg",
        network_2d="TF-Slim inception_v1 (ImageNet, e.g. inception_v1_2016_08_28)",
        entries=entries,
        identity=tuple(identity),
        first_convs=("Conv3d_1a_spatial_conv",),
        bn_epsilon=SLIM_BN_EPSILON,
    )


def _keras_entries(table, name: str, backbone: str) -> Mapping2D:
    entries: dict[str, dict[str, str]] = {}
    for ours, theirs, _ in table:
        entries[f"{ours}_conv"] = {"kernel": f"{theirs}_conv/kernel"}
        bn = {w: f"{theirs}_bn/{w}" for w in ("gamma", "beta", "moving_mean", "moving_variance")}
        entries[f"{ours}_bn"] = {**bn, "conv_bias": f"{theirs}_conv/bias"}
    return Mapping2D(
        name=name,
        backbone=backbone,
        network_2d="keras.applications.ResNet50 (ImageNet)",
        entries=entries,
        identity=(),
        first_convs=("conv1_conv",),
        bn_epsilon=KERAS_RESNET50_BN_EPSILON,
        input_convention="caffe",
    )


def r3d50g_resnet50() -> Mapping2D:
    """R3D50-G <- Keras ResNet50 (`R3D50G_RESNET50_TABLE`): 53 convolutions and batch norms."""
    return _keras_entries(R3D50G_RESNET50_TABLE, "r3d50g_resnet50", "r3d50g")


def stm_resnet50() -> Mapping2D:
    """STM <- Keras ResNet50 (`STM_RESNET50_TABLE`, same names): 53 convolutions and batch
    norms; the CSTM's temporal and the CMM's layers stay at init."""
    return _keras_entries(STM_RESNET50_TABLE, "stm_resnet50", "stm")


MAPPINGS: dict[str, Callable[[], Mapping2D]] = {
    "s3dg_inception_v1": s3dg_inception_v1,
    "r3d50g_resnet50": r3d50g_resnet50,
    "stm_resnet50": stm_resnet50,
}
# The mapping a backbone gets by default.
DEFAULT_MAPPING = {"s3dg": "s3dg_inception_v1", "r3d50g": "r3d50g_resnet50", "stm": "stm_resnet50"}


# -- kernels --------------------------------------------------------------------------------
def inflate_kernel(kernel_2d: np.ndarray, time: int) -> np.ndarray:
    """I3D's inflation: `[kh, kw, cin, cout]` -> `[time, kh, kw, cin, cout]`, the 2D kernel
    repeated along time and divided by `time` (time = 1: the 2D kernel with a time axis)."""
    kernel_2d = np.asarray(kernel_2d)
    if kernel_2d.ndim != 4:
        raise ValueError(f"kernel_2d shape {kernel_2d.shape}: expected [kh, kw, cin, cout]")
    if time < 1:
        raise ValueError(f"time={time}: must be >= 1")
    return np.repeat(kernel_2d[None], time, axis=0) / np.asarray(time, kernel_2d.dtype)


def identity_temporal_kernel(time: int, channels: int, dtype="float32") -> np.ndarray:
    """`[time, 1, 1, channels, channels]`: 1 at the centre tap `time // 2` where input channel
    = output channel, 0 elsewhere (a temporal convolution that passes its input through)."""
    kernel = np.zeros((time, 1, 1, channels, channels), dtype)
    kernel[time // 2, 0, 0, np.arange(channels), np.arange(channels)] = 1
    return kernel


def adapt_input_channels(kernel_2d: np.ndarray, in_channels: int) -> np.ndarray:
    """TSN's cross-modality initialization: `[kh, kw, cin, cout]` averaged over cin, repeated
    `in_channels` times -> `[kh, kw, in_channels, cout]`."""
    mean = np.mean(np.asarray(kernel_2d), axis=2, keepdims=True)
    return np.repeat(mean, in_channels, axis=2).astype(np.asarray(kernel_2d).dtype)


def caffe_to_unit(kernel_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A first-layer kernel `W` `[kh, kw, 3, cout]` of a network fed caffe-preprocessed images
    (BGR pixels in [0, 255] minus `CAFFE_MEAN_BGR`) rewritten for RGB inputs u in [-1, 1]:
    returns `(127.5 * W[:, :, ::-1], b)` with `b = sum_{h,w,j} W[h, w, j] * (127.5 - mean_j)`,
    the bias to add after the convolution. The outputs are the same away from the
    zero-padded borders (the padding is 0 in either convention, a different image value)."""
    kernel_2d = np.asarray(kernel_2d, np.float64)
    if kernel_2d.ndim != 4 or kernel_2d.shape[2] != 3:
        raise ValueError(f"kernel_2d shape {kernel_2d.shape}: expected [kh, kw, 3, cout]")
    offset = UNIT_TO_PIXELS - np.asarray(CAFFE_MEAN_BGR)
    bias = np.einsum("hwjo,j->o", kernel_2d, offset)
    kernel = UNIT_TO_PIXELS * kernel_2d[:, :, ::-1]
    return kernel.astype(np.float32), bias.astype(np.float32)


# -- sources --------------------------------------------------------------------------------
class Source2D:
    """Named 2D arrays: `shapes` (name -> shape), `get(name)` -> numpy array."""

    def __init__(self, description: str, shapes: Mapping[str, tuple], get: Callable):
        self.description = description
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self._get = get

    def get(self, name: str) -> np.ndarray:
        return np.asarray(self._get(name))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], description: str = "arrays"):
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        return cls(description, {k: v.shape for k, v in arrays.items()}, arrays.__getitem__)


def detect_format(path: str) -> str:
    """`npz` for `*.npz`, `keras` for `*.h5` / `*.hdf5` (Keras weights), else `tf_checkpoint`."""
    lower = path.lower().rstrip("/")
    if lower.endswith(".npz"):
        return "npz"
    if lower.endswith((".h5", ".hdf5")):
        return "keras"
    return "tf_checkpoint"


def _local_copy(path: str, tmpdir: str) -> str:
    if "://" not in path:
        return path
    local = os.path.join(tmpdir, posixpath.basename(path))
    tf.io.gfile.copy(path, local, overwrite=True)
    return local


def _keras_resnet50_arrays(path: str) -> dict[str, np.ndarray]:
    errors = []
    with tempfile.TemporaryDirectory() as tmpdir:
        local = _local_copy(path, tmpdir)
        for include_top in (False, True):
            net = keras.applications.ResNet50(weights=None, include_top=include_top)
            try:
                net.load_weights(local)
            except Exception as e:  # noqa: BLE001 - reported below if no variant loads
                errors.append(f"include_top={include_top}: {type(e).__name__}: {e}")
                continue
            return {
                f"{layer.name}/{w.name}": w.numpy() for layer in net.layers for w in layer.weights
            }
    raise ValueError(
        f"init_2d={path!r}: not a weights file of keras.applications.ResNet50 ({'; '.join(errors)})"
    )


def open_source(path: str, format: str = "auto") -> Source2D:
    """The 2D variables in `path` (local or gs://) as `format` (`FORMATS`; `auto`:
    `detect_format`). TF checkpoint: the variable names as stored; Keras ResNet50 weights:
    `<layer>/<weight>` (e.g. `conv1_conv/kernel`, `conv1_bn/moving_mean`); npz: its keys."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: expected one of {list(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "npz":
        with tf.io.gfile.GFile(path, "rb") as f:
            with np.load(io.BytesIO(f.read())) as data:
                arrays = {k: data[k] for k in data.files}
        return Source2D.from_arrays(arrays, f"npz {path}")
    if fmt == "keras":
        return Source2D.from_arrays(_keras_resnet50_arrays(path), f"keras ResNet50 {path}")
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"init_2d={path!r}: not a TF checkpoint ({e})") from e
    return Source2D(f"tf checkpoint {path}", reader.get_variable_to_shape_map(), reader.get_tensor)


# -- inflation ------------------------------------------------------------------------------
@dataclasses.dataclass
class InflationReport:
    """What `inflate_into` did.

    Attributes:
      mapping, source: their names.
      loaded: 3D layers whose weights came from the 2D network.
      identity: temporal convolutions set to the identity.
      left_at_init: 3D layers with weights that kept their fresh initialization (gating,
        temporal batch norms, STM's temporal and motion layers, layers the mapping lacks, and
        with `allow_missing` the layers whose 2D variables are missing).
      missing: 3D layer -> the 2D variables the source lacks (`allow_missing` only).
      not_in_model: mapping entries for layers this model does not have.
      unused_2d: source variables no entry read (logits, global step, deeper blocks, ...).
      notes: defaults used (gamma = 1, no bias) and the input-channel adaptation.
    """

    mapping: str
    source: str
    loaded: list[str]
    identity: list[str]
    left_at_init: list[str]
    missing: dict[str, list[str]]
    not_in_model: list[str]
    unused_2d: list[str]
    notes: list[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (
            f"{self.mapping} from {self.source}: {len(self.loaded)} layers loaded, "
            f"{len(self.identity)} temporal convolutions set to the identity, "
            f"{len(self.left_at_init)} layers left at init, {len(self.missing)} missing, "
            f"{len(self.not_in_model)} mapping entries not in this model, "
            f"{len(self.unused_2d)} 2D variables unused"
        )


def _backbone_of(model) -> tuple[keras.Model, str, float | None]:
    """(the backbone, its backbone name, its width multiplier if known)."""
    cfg = getattr(model, "model_config", None)
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras.Model):
        name = cfg.backbone if cfg is not None else backbone.name
        return backbone, name, getattr(cfg, "width_multiplier", None)
    if isinstance(model, keras.Model):
        return model, model.name, None
    raise ValueError(f"model={type(model).__name__}: expected a VideoClassifier or a backbone")


def _resolve_mapping(mapping, backbone_name: str) -> Mapping2D:
    if isinstance(mapping, Mapping2D):
        return mapping
    if mapping is None:
        if backbone_name not in DEFAULT_MAPPING:
            raise ValueError(
                f"model.backbone={backbone_name!r}: no 2D mapping (there are mappings for "
                f"{sorted(DEFAULT_MAPPING)})"
            )
        mapping = DEFAULT_MAPPING[backbone_name]
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping={mapping!r}: expected one of {sorted(MAPPINGS)}")
    return MAPPINGS[mapping]()


def _weights_by_name(layer) -> dict:
    return {w.name: w for w in layer.weights}


class _Problems:
    """Shape mismatches, gathered so that one error lists them all."""

    def __init__(self):
        self.lines: list[str] = []
        # The first (layer, model's channels, 2D network's channels) of each kind.
        self.outputs: tuple[str, int, int] | None = None
        self.inputs: tuple[str, int, int] | None = None

    def add(self, layer: str, name: str, shape_2d, shape_3d, want, outputs=None, inputs=None):
        self.lines.append(
            f"{layer}: 2D {name} has shape {tuple(shape_2d)}, the 3D layer's weight is "
            f"{tuple(shape_3d)} (needs a 2D shape {tuple(want)})"
        )
        if outputs is not None and self.outputs is None:
            self.outputs = (layer, *outputs)
        if inputs is not None and self.inputs is None:
            self.inputs = (layer, *inputs)

    def hint(self, mapping: Mapping2D, width: float | None, backbone: str) -> str:
        if self.outputs is not None:
            layer, ours, theirs = self.outputs
            known = f"={width:g}" if width is not None else f" (about {ours / theirs:.3g} here)"
            return (
                f" The channel counts differ ({layer}: {ours} in the model, {theirs} in the 2D "
                f"network): the model's width_multiplier{known} does not fit "
                f"{mapping.network_2d}, whose weights fit width_multiplier=1.0."
            )
        if self.inputs is not None:
            layer, ours, theirs = self.inputs
            blocks = ""
            if backbone == "s3dg":
                blocks = " (S3D-G: model.s3dg_blocks must be the first n of the nine, e.g. 3b, 3c)"
            return (
                f" {layer} reads {ours} channels where the 2D network's reads {theirs}: the "
                f"layers before it differ from the 2D network's{blocks}."
            )
        return ""


def _conv_value(layer, mapping, name, arr, problems, notes, convention):
    """{"kernel": the inflated kernel}, plus "bias" (to fold into the batch norm) where the
    input convention is converted; None after recording a shape problem."""
    shape_3d = tuple(layer.kernel.shape)
    time, kh, kw, cin, cout = shape_3d
    want = (kh, kw, cin, cout)
    if arr.ndim != 4 or arr.shape[:2] != (kh, kw) or arr.shape[3] != cout:
        outputs = (cout, arr.shape[-1]) if arr.ndim == 4 and arr.shape[-1] != cout else None
        problems.add(layer.name, name, arr.shape, shape_3d, want, outputs=outputs)
        return None
    value = {}
    if layer.name in mapping.first_convs and convention == "caffe" and arr.shape[2] == 3:
        arr, bias = caffe_to_unit(arr)
        if cin == 3:  # RGB clips: the ImageNet mean offset goes into the batch norm
            value["bias"] = bias
        notes.append(
            f"{layer.name}: {name} reads caffe-preprocessed BGR pixels; rewritten for inputs "
            "in [-1, 1] (input channels reversed, x 127.5"
            + (", the mean offset folded into the batch norm's moving mean)" if cin == 3 else ")")
        )
    if arr.shape[2] != cin:
        if layer.name in mapping.first_convs:
            notes.append(
                f"{layer.name}: the model reads {cin} input channels, {name} {arr.shape[2]}: "
                f"the kernel averaged over its {arr.shape[2]} input channels and repeated {cin} "
                "times (TSN's cross-modality initialization)"
            )
            arr = adapt_input_channels(arr, cin)
        else:
            problems.add(layer.name, name, arr.shape, shape_3d, want, inputs=(cin, arr.shape[2]))
            return None
    value["kernel"] = inflate_kernel(arr, time)
    return value


def _bn_value(layer, mapping, names, source, problems, defaults, extra_bias=None):
    weights = _weights_by_name(layer)
    channels = int(weights["moving_mean"].shape[0])
    values = {}
    for w in ("gamma", "beta", "moving_mean", "moving_variance"):
        if w not in weights:  # a batch norm without scale / center
            continue
        name = names.get(w)
        if name is None or name not in source.shapes:  # gamma: the others were checked
            defaults.setdefault("gamma = 1 (the 2D batch norm has no scale)", []).append(layer.name)
            values[w] = np.ones((channels,), np.float32)
            continue
        arr = source.get(name)
        if arr.shape != (channels,):
            outputs = (channels, arr.shape[0]) if arr.ndim == 1 else None
            problems.add(layer.name, name, arr.shape, (channels,), (channels,), outputs=outputs)
            return None
        values[w] = arr.astype(np.float32)
    bias_name = names.get("conv_bias")
    if bias_name and bias_name in source.shapes:
        bias = source.get(bias_name)
        if bias.shape != (channels,):
            problems.add(layer.name, bias_name, bias.shape, (channels,), (channels,))
            return None
        values["moving_mean"] = values["moving_mean"] - bias
    elif bias_name:
        defaults.setdefault("no convolution bias to fold", []).append(layer.name)
    if extra_bias is not None:
        values["moving_mean"] = values["moving_mean"] - extra_bias
    delta = mapping.bn_epsilon - float(layer.epsilon)
    values["moving_variance"] = np.maximum(values["moving_variance"] + delta, 0.0)
    return values


def inflate_into(
    model,
    source,
    mapping: Mapping2D | str | None = None,
    *,
    format: str = "auto",
    allow_missing: bool = False,
    input_convention: str | None = None,
) -> InflationReport:
    """Loads a 2D network's weights into `model` by inflation (module docstring).

    Args:
      model: a `VideoClassifier` (its backbone is filled; the head is left) or a backbone
        (`models.build_backbone`).
      source: a path (`open_source` with `format`), a `Source2D`, or a dict name -> array.
      mapping: a `Mapping2D`, a `MAPPINGS` name, or None: the backbone's `DEFAULT_MAPPING`.
      format: the file format of a path source (`FORMATS`).
      allow_missing: leave layers whose 2D variables are missing at init (listed in the
        report) instead of raising.
      input_convention: what the 2D network's first layer read (`INPUT_CONVENTIONS`); default
        the mapping's (`caffe` for Keras' ResNet50, `unit` for slim's Inception-v1).

    Returns:
      The `InflationReport` (also logged). Raises ValueError, before assigning anything, if 2D
      variables are missing (listing them) or a shape does not fit (naming the 3D layer, the
      2D variable and both shapes; a channel-count mismatch says which width the model has).
    """
    backbone, backbone_name, width = _backbone_of(model)
    mapping = _resolve_mapping(mapping, backbone_name)
    convention = input_convention or mapping.input_convention
    if convention not in INPUT_CONVENTIONS:
        raise ValueError(f"input_convention={convention!r}: expected one of {INPUT_CONVENTIONS}")
    if isinstance(source, str):
        source = open_source(source, format)
    elif not isinstance(source, Source2D):
        source = Source2D.from_arrays(source)
    layers = {layer.name: layer for layer in backbone.layers}
    present = [name for name in mapping.entries if name in layers]
    not_in_model = [name for name in mapping.entries if name not in layers]
    not_in_model += [name for name in mapping.identity if name not in layers]
    if not present:
        raise ValueError(
            f"mapping {mapping.name!r} ({mapping.backbone}): none of its layers is in this "
            f"{backbone_name} model"
        )

    missing: dict[str, list[str]] = {}
    for layer_name in present:
        absent = [
            name
            for w, name in mapping.entries[layer_name].items()
            if w not in OPTIONAL_WEIGHTS and name not in source.shapes
        ]
        if absent:
            missing[layer_name] = absent
    if missing and not allow_missing:
        names = [n for ns in missing.values() for n in ns]
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise ValueError(
            f"{source.description}: lacks {len(names)} variables of {mapping.network_2d} that "
            f"mapping {mapping.name!r} needs for {len(missing)} layers: {shown} (is it that "
            "network's file? allow_missing=True leaves those layers at init)"
        )

    problems = _Problems()
    notes: list[str] = []
    defaults: dict[str, list[str]] = {}
    values: dict[str, dict[str, np.ndarray]] = {}
    extra_bias: dict[str, np.ndarray] = {}  # `X_bn` -> bias of `X_conv` from the convention
    todo = [name for name in present if name not in missing]
    for layer_name in todo:
        names = mapping.entries[layer_name]
        if "kernel" in names:
            value = _conv_value(
                layers[layer_name],
                mapping,
                names["kernel"],
                source.get(names["kernel"]),
                problems,
                notes,
                convention,
            )
            if value is not None and "bias" in value:
                extra_bias[layer_name.removesuffix("_conv") + "_bn"] = value.pop("bias")
            if value is not None:
                values[layer_name] = value
    for layer_name in todo:
        names = mapping.entries[layer_name]
        if "kernel" not in names:
            value = _bn_value(
                layers[layer_name],
                mapping,
                names,
                source,
                problems,
                defaults,
                extra_bias.get(layer_name),
            )
            if value is not None:
                values[layer_name] = value
    identity = [name for name in mapping.identity if name in layers]
    for layer_name in identity:
        shape = tuple(layers[layer_name].kernel.shape)
        if shape[1:3] != (1, 1) or shape[3] != shape[4]:
            problems.lines.append(
                f"{layer_name}: kernel {shape} is not a temporal [t, 1, 1, c, c] convolution"
            )
            continue
        values[layer_name] = {"kernel": identity_temporal_kernel(shape[0], shape[3])}
    if problems.lines:
        hint = problems.hint(mapping, width, backbone_name)
        shown = problems.lines[:8]
        more = f"\n  ... and {len(problems.lines) - 8} more" if len(problems.lines) > 8 else ""
        raise ValueError(
            f"{source.description} into {backbone_name} ({mapping.name}): "
            f"{len(problems.lines)} shape mismatches:\n  " + "\n  ".join(shown) + more + hint
        )

    for layer_name, layer_values in values.items():
        weights = _weights_by_name(layers[layer_name])
        for w, value in layer_values.items():
            weights[w].assign(np.asarray(value, dtype=weights[w].dtype))

    used = {
        name
        for layer_name in values
        for name in mapping.entries.get(layer_name, {}).values()
        if name in source.shapes
    }
    for what, names in defaults.items():
        notes.append(f"{what}: {len(names)} layers ({', '.join(names[:3])}, ...)")
    report = InflationReport(
        mapping=mapping.name,
        source=source.description,
        loaded=[name for name in present if name in values],
        identity=identity,
        left_at_init=[
            layer.name for layer in backbone.layers if layer.weights and layer.name not in values
        ],
        missing=missing,
        not_in_model=not_in_model,
        unused_2d=sorted(set(source.shapes) - used),
        notes=notes,
    )
    log.info("init_2d: %s", report.summary())
    for note in notes:
        log.info("init_2d: %s", note)
    return report
