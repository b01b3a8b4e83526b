# sentirefine image: the package built from this repository, CPU torch by default.
#   docker build -t sentirefine .                                   # CPU (PyTorch CPU index)
#   docker build -t sentirefine:cuda --build-arg TORCH_VARIANT=cu128 .   # CUDA build of torch
# See README "Docker" and compose.yaml (MLflow server + pipeline).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
# "cpu" = PyTorch's CPU wheel (small); "cuXYZ" (e.g. cu128) = that CUDA build, run with --gpus all.
ARG TORCH_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true

# git: every workspace is a git + DVC repository (versioned label snapshots).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# torch first and pinned, from PyTorch's own index: from PyPI an unpinned torch is a multi-GB CUDA build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sentirefine ./sentirefine
RUN pip install . \
    && groupadd --gid 1000 sentirefine \
    && useradd --create-home --uid 1000 --gid 1000 sentirefine \
    && mkdir -p /data /mlflow \
    && chown sentirefine:sentirefine /data /mlflow

USER 1000:1000
WORKDIR /data
ENV SENTIREFINE_WORKSPACE=/data/workspace
ENTRYPOINT ["sentirefine"]
CMD ["--help"]
