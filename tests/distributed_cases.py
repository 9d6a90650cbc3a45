"""Training runs shared by tests/test_distributed.py and the torchrun processes it starts.

Run under torchrun: `python -m torch.distributed.run --standalone --nproc_per_node 2
tests/distributed_cases.py DATA.npy OUT_DIR` trains every case through the CLI (as
`torchrun -m sparseae train ...` does) into OUT_DIR/<case>.
"""
import sys

COMMON = ["--dataset", "array", "--epochs", "2", "--batch-size", "20", "--quiet", "--seed", "5",
          "--output-activation", "linear", "--input-transform", "standardize"]
CASES = {
    # KL: rho_hat must be the mean over the global batch, its gradient exact; beta large so it matters.
    "kl": ["--hidden", "12", "--activation", "sigmoid", "--beta", "3", "--rho", "0.1", "--stream", "yes"],
    "topk": ["--hidden", "16", "--activation", "relu", "--penalty", "topk", "--k", "3",
             "--unit-norm-decoder", "yes", "--pre-bias", "yes", "--stream", "no"],
    # BatchTopK: the k * N largest activations of the global batch, and the same learned threshold.
    "batchtopk": ["--hidden", "16", "--activation", "relu", "--penalty", "topk", "--topk", "batchtopk",
                  "--k", "3", "--stream", "no"],
    # AuxK: dead units counted on the global batch (a short window, so some die), AuxK's sums global.
    "auxk": ["--hidden", "32", "--activation", "relu", "--penalty", "topk", "--k", "2", "--auxk",
             "--dead-window", "40", "--k-aux", "4", "--stream", "no"],
}


def args(case: str, data: str, out: str) -> list[str]:
    return ["train", *COMMON, *CASES[case], "--data", data, "--out", out]


if __name__ == "__main__":
    from sparseae.cli import main

    data, out = sys.argv[1], sys.argv[2]
    for case in CASES:
        code = main(args(case, data, f"{out}/{case}"))
        if code:
            sys.exit(code)
