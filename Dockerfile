# syntax=docker/dockerfile:1.7
#
# Wan2.2 image-to-video worker for RunPod Serverless, built for the RTX 5090 (sm_120):
# CUDA 12.8, Python 3.12, PyTorch 2.10.0 (PyPI's CUDA 12.8 build), SageAttention 2.2.0 compiled
# for sm_120, ComfyUI 0.33.0 and nine custom nodes. Every source is pinned; docker/versions.json
# records the same pins and tests/test_dockerfile.py keeps the two in step. Each Python install
# below runs, as written, in tests/test_requirements_resolve.py. The last RUN step is a smoke
# test: the build fails unless the image works (docs/image.md).
#
# Layers go from the slowest-changing to the fastest: each COPY brings only what the next step
# reads, so a change to the worker, a node pin or docker/requirements.lock never re-downloads
# the torch stack (docker/torch.lock).

# ---------------------------------------------------------------------------------------------
# uv, the installer used in both stages.
FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

# ---------------------------------------------------------------------------------------------
# Builder: compile SageAttention into a wheel against the same torch the image runs. The CUDA
# devel image brings nvcc and the CUDA headers; cuDNN is not needed.
FROM nvidia/cuda:12.8.1-devel-ubuntu24.04 AS sage-builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# Ubuntu pins the package set of the release; exact apt versions vanish from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential ca-certificates git python3.12 python3.12-dev \
 && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv
ENV UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/opt/build-venv \
    PATH=/opt/build-venv/bin:$PATH

# torch from the same lock as the runtime; SageAttention's build tools at the versions its
# pyproject.toml allows (setuptools<75, wheel<0.44, packaging<24).
COPY docker/torch.lock /build/docker/torch.lock
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv --python /usr/bin/python3.12 /opt/build-venv \
 && uv pip install --index-url https://pypi.org/simple --only-binary :all: \
      --constraint /build/docker/torch.lock torch \
 && uv pip install --index-url https://pypi.org/simple --only-binary :all: \
      setuptools==74.1.3 wheel==0.43.0 packaging==23.2 ninja==1.13.2 \
 && uv pip check

COPY --chmod=0755 docker/git-fetch-commit.sh /usr/local/bin/git-fetch-commit
RUN git-fetch-commit https://github.com/thu-ml/SageAttention.git /build/SageAttention \
      d1a57a546c3d395b1ffcbeecc66d81db76f3b4b5

# sm_120 alone: adding 9.0 makes the sm_90a kernels compile for sm_120 and fail (upstream
# issue #291). The 5090 needs nothing else.
ENV TORCH_CUDA_ARCH_LIST="12.0"
# Parallelism bounded so a 4-core, 16 GB hosted runner does not run out of memory:
# EXT_PARALLEL extensions at once, MAX_JOBS compiler processes each, NVCC_THREADS per nvcc.
ARG EXT_PARALLEL=1
ARG MAX_JOBS=2
ARG NVCC_THREADS=2
WORKDIR /build/SageAttention
RUN EXT_PARALLEL="${EXT_PARALLEL}" MAX_JOBS="${MAX_JOBS}" \
    NVCC_APPEND_FLAGS="--threads ${NVCC_THREADS}" \
    uv build --wheel --no-build-isolation --python /opt/build-venv/bin/python \
      --out-dir /wheels .

COPY scripts/smoke_image.py /build/smoke/
RUN python /build/smoke/smoke_image.py wheel /wheels/sageattention-*.whl

# ---------------------------------------------------------------------------------------------
# Runtime. The CUDA base image only: the host's driver (libcuda, mounted by the NVIDIA
# container toolkit) and torch's own wheels (CUDA runtime, cuBLAS, cuDNN, NCCL, ...) bring the
# rest; the base adds the toolkit's environment (NVIDIA_VISIBLE_DEVICES,
# NVIDIA_DRIVER_CAPABILITIES=compute,utility, NVIDIA_REQUIRE_CUDA=cuda>=12.8) and libcudart 12.8.
# docs/image.md lists what the runtime takes from where.
FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# ffmpeg: MP4 encoding (VideoHelperSuite) and the worker's frame check. libgl1, libglib2.0-0:
# OpenCV. gcc, libc6-dev, python3.12-dev: Triton compiles a small launcher with the system C
# compiler and Python's headers the first time a Triton kernel runs (SageAttention's
# quantisation kernels are Triton). git: ComfyUI and nodes read their own revision.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates ffmpeg gcc git libc6-dev libgl1 libglib2.0-0 libgomp1 \
      python3.12 python3.12-dev \
 && rm -rf /var/lib/apt/lists/*

COPY --from=uv /uv /usr/local/bin/uv
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1

# The torch stack first, from PyPI, exactly as docker/torch.lock pins it (about 3.5 GB of
# wheels). Every later install runs with the same lock as a constraint, so nothing replaces it.
COPY docker/torch.lock /app/docker/torch.lock
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv --python /usr/bin/python3.12 /opt/venv \
 && uv pip install --index-url https://pypi.org/simple --only-binary :all: \
      --constraint /app/docker/torch.lock torch torchvision torchaudio

RUN --mount=type=bind,from=sage-builder,source=/wheels,target=/wheels \
    uv pip install --no-deps /wheels/sageattention-2.2.0-*.whl

# ComfyUI's, the nodes' and the worker's requirements in one resolution, every version fixed
# by the two locks; a node whose requirements cannot be met fails the build. The requirement
# files are the copies kept in docker/requirements/ (checked against the fetched ones below),
# so a node pin that leaves its requirements alone does not reinstall anything. Three opencv
# wheels share the cv2 package and would overwrite each other in parallel, so the contrib
# build (a superset, needed by Frame-Interpolation) is reinstalled last.
COPY docker/requirements.lock /app/docker/requirements.lock
COPY docker/requirements/ /app/docker/requirements/
COPY requirements.txt /app/requirements.txt
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --index-url https://pypi.org/simple --only-binary :all: \
      --constraint /app/docker/torch.lock --constraint /app/docker/requirements.lock \
      -r /app/docker/requirements/ComfyUI/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/rgthree-comfy/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/ComfyUI_essentials/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/ComfyUI-Easy-Use/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/ComfyUI-KJNodes/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/ComfyUI-VideoHelperSuite/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/ComfyUI-Crystools/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/RES4LYF/requirements.txt \
      -r /app/docker/requirements/ComfyUI/custom_nodes/ComfyUI-Frame-Interpolation/requirements-no-cupy.txt \
      -r /app/requirements.txt \
 && uv pip install --index-url https://pypi.org/simple --only-binary :all: --no-deps \
      --constraint /app/docker/requirements.lock \
      --reinstall-package opencv-contrib-python opencv-contrib-python \
 && uv pip check

COPY --chmod=0755 docker/git-fetch-commit.sh /usr/local/bin/git-fetch-commit
RUN git-fetch-commit https://github.com/comfyanonymous/ComfyUI.git /opt/ComfyUI \
      783545f689a0af730065994b46b382ae24844c99

# The nine custom nodes. Never ComfyUI-Manager (it installs code at run time) or QwenVL. Then
# ComfyUI's and the nodes' bytecode, compiled once here rather than at every worker start: it
# takes 1.4-1.9 s off ComfyUI's start (docs/history/benchmarks.md, "ComfyUI's start").
WORKDIR /opt/ComfyUI/custom_nodes
RUN git-fetch-commit https://github.com/rgthree/rgthree-comfy.git \
      rgthree-comfy 13b4399c00b5ef5a97b1b6800fc1185874740f5d \
 && git-fetch-commit https://github.com/cubiq/ComfyUI_essentials.git \
      ComfyUI_essentials 33ff89fd354d8ec3ab6affb605a79a931b445d99 \
 && git-fetch-commit https://github.com/yolain/ComfyUI-Easy-Use.git \
      ComfyUI-Easy-Use 4de1ab3b66e48da916b6f263bacd001df53a2720 \
 && git-fetch-commit https://github.com/kijai/ComfyUI-KJNodes.git \
      ComfyUI-KJNodes 3f20054214fec9f9234fd3841ae6f1e4287948f6 \
 && git-fetch-commit https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite.git \
      ComfyUI-VideoHelperSuite 4ee72c065db22c9d96c2427954dc69e7b908444b \
 && git-fetch-commit https://github.com/crystian/ComfyUI-Crystools.git \
      ComfyUI-Crystools 2f18256c5b5063937106f29a8e0a7db3ae3869b7 \
 && git-fetch-commit https://github.com/ClownsharkBatwing/RES4LYF.git \
      RES4LYF 022c873c6d198c67b3312a1804336533a050df18 \
 && git-fetch-commit https://github.com/pythongosssss/ComfyUI-Custom-Scripts.git \
      ComfyUI-Custom-Scripts 609f3afaa74b2f88ef9ce8d939626065e3247469 \
 && git-fetch-commit https://github.com/Fannovel16/ComfyUI-Frame-Interpolation.git \
      ComfyUI-Frame-Interpolation 26545cc2dd95bc3d27f056016300673bdeee78f5 \
 && python -m compileall -q -j 0 /opt/ComfyUI

# The requirement files installed above are copies; the fetched ones must be the same bytes.
COPY scripts/smoke_image.py /app/scripts/smoke_image.py
RUN python /app/scripts/smoke_image.py requirement-files \
      --comfyui-dir /opt/ComfyUI --kept /app/docker/requirements

# The worker.
WORKDIR /app
COPY rp_handler.py extra_model_paths.yaml ./
COPY --chmod=0755 start.sh ./
COPY wan_worker/ ./wan_worker/
COPY workflows/ ./workflows/
COPY scripts/ ./scripts/
COPY docker/versions.json ./docker/versions.json
RUN python -m compileall -q -j 0 /app/rp_handler.py /app/wan_worker
ENV COMFYUI_DIR=/opt/ComfyUI

# Build-time smoke test (no GPU here): the build fails unless it passes. It also checks that
# Frame-Interpolation reads RIFE from the folder provisioning links rife47.pth into, so RIFE
# never downloads at job time.
RUN python /app/scripts/smoke_image.py image \
      --comfyui-dir /opt/ComfyUI \
      --workflow /app/workflows/wan_flf_i2v_api.json \
      --extra-model-paths /app/extra_model_paths.yaml \
      --lock /app/docker/torch.lock --lock /app/docker/requirements.lock \
      --models-manifest /app/workflows/models.json

ENTRYPOINT ["/app/start.sh"]
