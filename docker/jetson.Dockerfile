# adafv on a Jetson (JetPack 6.x, L4T r36): the torch-free runtime and server, with NVIDIA's onnxruntime-gpu build.
# Build on the Jetson:   docker build -f docker/jetson.Dockerfile -t adafv:jp6 .
# Run:                   docker run --rm --runtime nvidia --network host -v $PWD/engines:/engines adafv:jp6 \
#                            adafv serve /engines/llava-next-k64-fp16-cuda --host 0.0.0.0
# Not built by CI (no Jetson, no registry access there); tests/test_docker.py checks its structure.
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/adafv
ENV PATH=/opt/adafv/bin:$PATH
# NVIDIA's Jetson AI Lab index: onnxruntime-gpu 1.23.0 for JetPack 6 (CUDA 12.6, Python 3.10), adafv's floor
RUN pip install --no-cache-dir "onnxruntime-gpu==1.23.0" --index-url https://pypi.jetson-ai-lab.io/jp6/cu126
COPY . /src/adafv
RUN pip install --no-cache-dir "/src/adafv[serve]" && adafv --version
CMD ["adafv", "doctor"]
