#!/usr/bin/env python3
"""Write a WAN 2.1-named .safetensors model whose 2-D weights have the spectrum of trained layers.

Why: learned rounding spends its effort on each weight's top-k (k = 16) singular subspace, so judging it (and the
randomized SVD that finds that subspace) needs weights where that subspace means something. An i.i.d. Gaussian
matrix has a flat Marchenko-Pastur spectrum: its top 16 directions are barely separated from the next thousand
and carry nothing special. Trained transformer weights look different, and each weight W [M, N] here copies three
traits of theirs:
  * a power-law head: sum_{i<R} sigma_i a_i b_i^T with R = min(256, M, N), a_i and b_i orthonormal (QR of
    Gaussian draws) and sigma_i = s0 * (i+1)^-alpha (alpha 0.8 by default; a "heavy-tailed" trained layer has
    alpha around 0.5-1). The top singular values decay slowly, so the top-16 gap is small but real;
  * a noise bulk: i.i.d. Gaussian with sd chosen so its largest singular value, about sd * (sqrt(M) + sqrt(N)),
    sits at sigma_R, where the power law ends (the random part of training that no low rank explains);
  * outlier input channels: 4 columns, picked by the seed, multiplied by 8, as the few large activation
    channels of DiTs and LLMs leave in their weights (they dominate the top singular values and absmax scales).
Then W is scaled to RMS 0.02, like trained DiT weights; biases are normal(0, 0.02), norm3.weight
1 + normal(0, 0.05) (1-D, left unquantized by `--wan`).

Names follow tools/make_demo_model.py (WAN 2.1, so `quantflow --wan` filters them: patch_embedding, head.head,
norm and bias are skipped), but patch_embedding.weight is 2-D [dim, 64] here, so `--model auto` (which expects
it 5-D) does not detect WAN: pass --wan. Each tensor has its own generator, default_rng([seed, crc32(name)]), so
a tensor's values do not depend on --blocks. Generated in float32 one tensor at a time and streamed to disk.
"""
import argparse
import json
import os
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_model import header_bytes  # noqa: E402  (the same safetensors layout: sorted, padded header)

SHAPES = {"wan": dict(dim=5120, ffn=13824), "small": dict(dim=256, ffn=704)}
PATCH_IN, HEAD_OUT = 64, 64  # 16 channels x (1, 2, 2) patch, in and out


def structured_weight(rng, m, n, alpha=0.8, rank=256, outliers=4, outlier_gain=8.0, rms=0.02):
    """float32 [m, n]: power-law low rank + noise bulk at sigma_R + outlier columns, scaled to RMS `rms`."""
    r = min(rank, m, n)
    a, _ = np.linalg.qr(rng.standard_normal((m, r), dtype=np.float32))
    b, _ = np.linalg.qr(rng.standard_normal((n, r), dtype=np.float32))
    sigma = (np.arange(1, r + 1, dtype=np.float32) ** np.float32(-alpha))  # s0 = 1; the RMS scaling fixes it
    sd = sigma[-1] / (np.sqrt(m) + np.sqrt(n))  # the bulk's edge sd*(sqrt m + sqrt n) at sigma_R
    w = rng.standard_normal((m, n), dtype=np.float32)
    w *= np.float32(sd)
    w += (a * sigma) @ b.T
    del a, b
    cols = rng.choice(n, size=min(outliers, n), replace=False)
    w[:, cols] *= np.float32(outlier_gain)
    w *= np.float32(rms / np.sqrt(np.mean(np.square(w, dtype=np.float64))))
    return w


def iid_weight(rng, m, n, rms=0.02):
    """float32 [m, n] i.i.d. normal(0, rms): the unstructured baseline."""
    return rng.standard_normal((m, n), dtype=np.float32) * np.float32(rms)


def model_tensors(dim, ffn, blocks):
    """[(name, shape, kind)] sorted by name (one dtype, so this is the safetensors writer's order)."""
    t = [("patch_embedding.weight", [dim, PATCH_IN], "w"), ("head.head.weight", [HEAD_OUT, dim], "w")]
    for i in range(blocks):
        p = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                t += [(f"{p}{attn}.{proj}.weight", [dim, dim], "w"), (f"{p}{attn}.{proj}.bias", [dim], "b")]
        t += [(p + "ffn.0.weight", [ffn, dim], "w"), (p + "ffn.0.bias", [ffn], "b"),
              (p + "ffn.2.weight", [dim, ffn], "w"), (p + "ffn.2.bias", [dim], "b"),
              (p + "norm3.weight", [dim], "n")]
    return sorted(t, key=lambda x: x[0].encode())


def make_tensor(name, shape, kind, seed, alpha):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if kind == "w":
        if alpha is None:
            return iid_weight(rng, shape[0], shape[1])
        return structured_weight(rng, shape[0], shape[1], alpha=alpha)
    x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02 if kind == "b" else 0.05)
    return x + np.float32(1.0) if kind == "n" else x


def to_bf16_bytes(x):
    """float32 array -> bf16 bytes, round to nearest even (finite inputs; x is overwritten)."""
    u = x.view(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (u >> np.uint32(16)).astype("<u2").tobytes()


def write_model(path, tensors, dtype, metadata, seed, alpha):
    head, data_size = header_bytes([(name, dtype, shape, kind) for name, shape, kind in tensors], metadata)
    tmp = path + ".part"
    with open(tmp, "wb") as out:
        out.write(head)
        for name, shape, kind in tensors:
            x = make_tensor(name, shape, kind, seed, alpha)
            out.write(to_bf16_bytes(x) if dtype == "BF16" else x.astype("<f4").tobytes())
            del x
    os.replace(tmp, path)
    return len(head) + data_size


def check_file(path, tensors, dtype):
    """Re-read the header (bf16) or every tensor (f32, through safetensors.numpy) and compare with the plan."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        size = os.fstat(f.fileno()).st_size
    header.pop("__metadata__", None)
    assert [k for k in header] == [t[0] for t in tensors], "header tensor order"
    assert all(header[t[0]]["shape"] == t[1] and header[t[0]]["dtype"] == dtype for t in tensors), "shapes/dtypes"
    assert 8 + n + max(v["data_offsets"][1] for v in header.values()) == size, "file size"
    if dtype == "F32":
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            for name, shape, _ in tensors:
                assert list(f.get_tensor(name).shape) == shape, name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output")
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="wan", help="wan: dim 5120, ffn 13824; small: 256, 704")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--dim", type=int)
    ap.add_argument("--ffn", type=int)
    ap.add_argument("--alpha", type=float, default=0.8, help="power-law exponent of the singular values")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--iid", action="store_true", help="i.i.d. Gaussian weights instead (no meaningful top-k subspace)")
    args = ap.parse_args(argv)
    cfg = dict(SHAPES[args.shapes], blocks=args.blocks)
    for key in ("dim", "ffn"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if min(cfg.values()) < 1 or args.seed < 0 or args.alpha < 0:
        ap.error("--dim, --ffn, --blocks must be positive, --seed and --alpha non-negative")
    dtype = {"bf16": "BF16", "f32": "F32"}[args.dtype]
    tensors = model_tensors(cfg["dim"], cfg["ffn"], cfg["blocks"])
    metadata = {"format": "pt", "generator": "quantflow tools/make_structured_model.py", "architecture": "wan2.1-t2v",
                "dim": str(cfg["dim"]), "ffn_dim": str(cfg["ffn"]), "num_layers": str(cfg["blocks"]),
                "alpha": str(args.alpha), "seed": str(args.seed)}
    t0 = time.monotonic()
    size = write_model(args.output, tensors, dtype, metadata, args.seed, None if args.iid else args.alpha)
    check_file(args.output, tensors, dtype)
    print(f"{args.output}: {len(tensors)} tensors, {size} bytes, {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
