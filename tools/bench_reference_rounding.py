#!/usr/bin/env python3
"""Times the reference tool's learned rounding (PyPI convert-to-quant, CPU PyTorch) on the weights of a
.safetensors file, through its Python API, with the seed's default arguments. Run by tools/bench_rounding.py
in an environment that has torch and convert-to-quant installed; prints one JSON object per (tensor, mode).

    python3 bench_reference_rounding.py WEIGHTS.safetensors MODE [MODE ...]    (MODE: simple original adamw radam)

QF_BENCH_TENSORS=a,b limits the run to those tensors (comma-separated names).
"""
import json
import os
import sys
import time

import torch
from safetensors.torch import load_file
from convert_to_quant.converters.learned_rounding import LearnedRoundingConverter


def converter(mode):
    # The seed's defaults (spec 1.1), spelled out: newer releases changed several of them.
    return LearnedRoundingConverter(
        optimizer="original" if mode == "simple" else mode, num_iter=500, lr=0.01, top_p=0.01, min_k=1, max_k=16,
        full_matrix=False, no_learned_rounding=(mode == "simple"), lr_schedule="adaptive", early_stop_loss=1e-8,
        early_stop_lr=1e-8, early_stop_stall=500, scaling_mode="tensor", target_format="fp8", device="cpu")


def main():
    path, modes = sys.argv[1], sys.argv[2:]
    tensors = load_file(path)
    only = [t for t in os.environ.get("QF_BENCH_TENSORS", "").split(",") if t]
    for name in sorted(tensors):
        if only and name not in only:
            continue
        w = tensors[name]
        for mode in modes:
            conv = converter(mode)
            start = time.perf_counter()
            conv.convert(w, key=name, has_bias=False)
            seconds = time.perf_counter() - start
            print(json.dumps({"tensor": name, "shape": list(w.shape), "mode": mode, "seconds": seconds,
                              "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
