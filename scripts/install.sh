#!/usr/bin/env bash
# Set up sparseae on a fresh machine: FashionMNIST from Debian (when apt is
# available), a virtual environment in .venv, the CPU build of PyTorch pinned
# to 2.13.0 (an unpinned torch pulls a multi-GB CUDA build), then the package.
# Usage: bash scripts/install.sh        # library + CLI
#        bash scripts/install.sh test   # plus what the tests need, Debian's chromium included (the
#                                       # browser tests open the run report in it)
set -euo pipefail
cd "$(dirname "$0")/.."
packages=()
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    packages+=(dataset-fashion-mnist)
fi
if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null; then
    packages+=(chromium)
fi
if [ ${#packages[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${packages[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q torch==2.13.0
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
.venv/bin/python -m pip install -q -e ".${extras}"
# Tennessee Eastman data for `sparseae monitor` (only its data files are read; its dependencies
# - pandas, statsmodels, optuna, seaborn - are not needed, hence --no-deps)
if [ "${1:-}" = "test" ]; then
    .venv/bin/python -m pip install -q --no-deps bibmon==1.2.0
fi
