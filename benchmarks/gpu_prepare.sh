#!/usr/bin/env bash
# Copy what benchmarks/gpu_all.py needs on a GPU machine that reaches nothing outside itself into
# runs/gpu_carry/ (git-ignored, about 30 MB): the FashionMNIST files and the peer loop.
# Then, with the device tool: run(command="PYTHONPATH=src python3 benchmarks/gpu_all.py",
#                                 carry=["runs/gpu_carry"], timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/gpu_carry/fashion-mnist
cp /usr/share/datasets/fashion-mnist/*.gz runs/gpu_carry/fashion-mnist/
cp /work/shared/peers/tutorial_kl.py runs/gpu_carry/
du -sh runs/gpu_carry
