#!/usr/bin/env bash
# Peak resident memory while training on a 6 GB .npy file (larger than the 2 GB budget).
# Creates /tmp/sparseae_big.npy (2,000,000 x 768 float32 = 6.1 GB), trains one epoch streamed
# in shuffled chunks under /usr/bin/time -v, prints the figure and its ratio to the 2 GB
# budget, and deletes the file (also on failure).
# Usage: bash benchmarks/bigarray_memory.sh [ROWS] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-2000000}
EPOCHS=${2:-1}
DATA=/tmp/sparseae_big.npy
OUT=$(mktemp -d /tmp/sparseae_big_run.XXXXXX)
trap 'rm -rf "$DATA" "$OUT"' EXIT
PY=${PYTHON:-.venv/bin/python}

# Written chunk by chunk with plain writes: the generator never holds the array either.
"$PY" - "$DATA" "$ROWS" <<'EOF'
import sys, numpy as np
path, rows, cols = sys.argv[1], int(sys.argv[2]), 768
rng = np.random.default_rng(0)
mix = rng.normal(size=(cols, cols)).astype(np.float32) / np.sqrt(cols)
with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)})
    for i in range(0, rows, 65536):
        n = min(65536, rows - i)
        z = rng.standard_normal((n, cols), dtype=np.float32)
        f.write(((z @ mix) * 2.0 + 1.0).astype(np.float32).tobytes())
EOF
ls -l "$DATA"

/usr/bin/time -v "$PY" -m sparseae train --dataset array --data "$DATA" --stream yes \
    --input-transform standardize --hidden 64 --activation sigmoid --output-activation linear \
    --epochs "$EPOCHS" --batch-size 4096 --lr 1e-3 --quiet --out "$OUT/run" 2> "$OUT/time.txt" | tee "$OUT/stdout.txt"

"$PY" - "$OUT/time.txt" "$DATA" <<'EOF'
import os, re, sys
text = open(sys.argv[1]).read()
kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
size = os.path.getsize(sys.argv[2])
print(f"file {size / 1e9:.2f} GB; peak resident memory {kb / 1024**2:.2f} GiB "
      f"(ratio to the 2 GiB budget: {kb / 1024**2 / 2:.2f}); wall {wall}")
EOF
