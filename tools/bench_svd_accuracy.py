#!/usr/bin/env python3
"""How many power iterations (and what oversampling) does quantflow's randomized top-k SVD need?

For each shape, builds one weight (tools/make_structured_model.py's generator, or i.i.d. Gaussian with --iid),
computes its exact top-k singular subspaces in float64 (eigh of the smaller Gram matrix, the other side
recovered as W v / sigma or W^T u / sigma), then runs in float32, as the C++ code does:
  * rsvd p q: the range finder (Halko, Martinsson & Tropp 2011, alg. 4.4):
    Y = W Omega [N, k+p]; QR; q times {Z = W^T Y; QR; Y = W Z; QR}; B = Y^T W; SVD of B; U = Y Ub;
  * right p q: kernels/cpu/svd_cpu.cpp's, the same iterations ending on the right, one product fewer:
    Y = W Omega; QR; q times {Z = W^T Y; QR; Y = W Z (QR but the last)}; SVD of Y = Uy S Vy^T; U = Uy, V = Z Vy;
  * krylov p q: block Krylov (Musco & Musco 2015): K = [W Omega, (W W^T) W Omega, ..., (W W^T)^q W Omega],
    each block orthonormalised against the previous ones, then Rayleigh-Ritz (SVD of K^T W).
overlap_u = ||U_exact^T U||_F^2 / k (1 = same subspace), overlap_v likewise; passes = products with W or W^T;
GFLOP = sum over passes of 2*M*N*columns / 1e9; time = numpy wall time of the whole variant.

With --binary PATH/qf_bench_svd (built with quantflow; tools/bench_svd.cpp) the shapes' weights, rounded to bf16 as
checkpoints hold them, also go through quantflow's own SVD on --device (cpu, cuda): the implementation, not a model
of it (CholeskyQR2 on the backend's panels, AMX products on the CPU where present), with its time per layer.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_structured_model import iid_weight, structured_weight, to_bf16_bytes  # noqa: E402

SHAPES = {"wan": [(5120, 5120), (13824, 5120), (5120, 13824)], "small": [(512, 512), (1382, 512)]}
RSVD = [(10, 4)] + [(16, q) for q in (1, 2, 3, 4)]
RIGHT = [(16, q) for q in (2, 3)]
KRYLOV = [(4, 2), (16, 1), (16, 2)]
TARGET = 0.99


def exact_top_k(w, k):
    """(U [M, k], sigma [k], V [N, k]) in float64 from eigh of the smaller Gram matrix."""
    w64 = w.astype(np.float64)
    wide = w.shape[0] <= w.shape[1]
    evals, evecs = np.linalg.eigh(w64 @ w64.T if wide else w64.T @ w64)
    top = evecs[:, ::-1][:, :k]
    sigma = np.sqrt(np.maximum(evals[::-1][:k], 0.0))
    other = (w64.T @ top if wide else w64 @ top) / sigma
    return (top, sigma, other) if wide else (other, sigma, top)


def orth(x):
    return np.linalg.qr(x)[0]


def rsvd(w, k, p, q, rng):
    m, n = w.shape
    l = min(k + p, m, n)
    y = orth(w @ rng.standard_normal((n, l), dtype=np.float32))
    for _ in range(q):
        y = orth(w @ orth(w.T @ y))
    ub, _, vt = np.linalg.svd(y.T @ w, full_matrices=False)
    return y @ ub[:, :k], vt[:k].T, [l] * (2 * q + 2)


def rsvd_right(w, k, p, q, rng):
    m, n = w.shape
    l = min(k + p, m, n)
    y = orth(w @ rng.standard_normal((n, l), dtype=np.float32))
    for i in range(max(q, 1)):
        z = orth(w.T @ (y if i == 0 else orth(y)))
        y = w @ z
    uy, _, vyt = np.linalg.svd(y, full_matrices=False)
    return uy[:, :k], z @ vyt[:k].T, [l] * (2 * max(q, 1) + 1)


def block_krylov(w, k, p, q, rng):
    m, n = w.shape
    b = min(k + p, m, n)
    blocks = [orth(w @ rng.standard_normal((n, b), dtype=np.float32))]
    for _ in range(q):
        y = w @ (w.T @ blocks[-1])
        for _ in range(2):  # block Gram-Schmidt twice: float32 loses orthogonality after one pass
            for qb in blocks:
                y -= qb @ (qb.T @ y)
        blocks.append(orth(y))
    kq = np.hstack(blocks)
    ub, _, vt = np.linalg.svd(kq.T @ w, full_matrices=False)
    return kq @ ub[:, :k], vt[:k].T, [b] + [b, b] * q + [kq.shape[1]]


def quantflow_svd(words, m, n, args):
    """U [m, k], V [n, k] and the timing line from quantflow's SVD (tools/bench_svd.cpp) of the bf16 weight."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.bf16")
        words.tofile(path)
        out = subprocess.run([args.binary, path, str(m), str(n), str(args.k), str(args.seed), args.device, os.path.join(tmp, "basis")],
                             capture_output=True, text=True, check=True).stdout.strip()
        u = np.fromfile(os.path.join(tmp, "basis.u"), dtype=np.float32).reshape(m, args.k)
        vt = np.fromfile(os.path.join(tmp, "basis.v"), dtype=np.float32).reshape(args.k, n)
    return u, vt.T, out


def overlap(exact, approx):
    return float(np.sum(np.square(exact.T @ approx.astype(np.float64))) / exact.shape[1])


def bench_shape(m, n, args):
    rng = np.random.default_rng([args.seed, m, n])
    w = iid_weight(rng, m, n) if args.iid else structured_weight(rng, m, n, alpha=args.alpha)
    if args.binary:  # the weight as checkpoints hold it: bf16 words, and their float values for the exact SVD
        words = np.frombuffer(to_bf16_bytes(w.astype(np.float32).copy()), dtype="<u2")
        w = (words.astype(np.uint32) << 16).view(np.float32).reshape(m, n)
    t0 = time.perf_counter()
    u_ex, s_ex, v_ex = exact_top_k(w, args.k + 1)
    print(f"\n{m}x{n} {'iid' if args.iid else 'structured'}: exact top-{args.k} in {time.perf_counter() - t0:.1f} s, "
          f"sigma_1 {s_ex[0]:.4g}, sigma_k {s_ex[args.k - 1]:.4g}, sigma_k+1/sigma_k {s_ex[args.k] / s_ex[args.k - 1]:.4f}")
    u_ex, v_ex = u_ex[:, :args.k], v_ex[:, :args.k]
    print(f"{'variant':<8} {'p':>3} {'q':>3} {'passes':>6} {'GFLOP':>8} {'time_s':>7} {'overlap_u':>10} {'overlap_v':>10}")
    rows = []
    if args.binary:
        u, v, line = quantflow_svd(words, m, n, args)
        gflop, ou, ov = 2.0 * m * n * 7 * (args.k + 16) / 1e9, overlap(u_ex, u), overlap(v_ex, v)
        print(f"quantflow ({line})\n{'quantflow':<8} {16:>3} {3:>3} {7:>6} {gflop:>8.1f} {'':>7} {ou:>10.5f} {ov:>10.5f}", flush=True)
        rows.append((("quantflow", 16, 3), gflop, ou, ov))
        if args.only_binary:
            return rows
    for name, fn, settings in (("rsvd", rsvd, RSVD), ("right", rsvd_right, RIGHT), ("krylov", block_krylov, KRYLOV)):
        for p, q in settings:
            t0 = time.perf_counter()
            u, v, cols = fn(w, args.k, p, q, np.random.default_rng([args.seed, p, q]))
            dt = time.perf_counter() - t0
            gflop = 2.0 * m * n * sum(cols) / 1e9
            ou, ov = overlap(u_ex, u), overlap(v_ex, v)
            rows.append(((name, p, q), gflop, ou, ov))
            print(f"{name:<8} {p:>3} {q:>3} {len(cols):>6} {gflop:>8.1f} {dt:>7.2f} {ou:>10.5f} {ov:>10.5f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="wan")
    ap.add_argument("--iid", action="store_true", help="i.i.d. Gaussian weights instead of structured ones")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--binary", help="qf_bench_svd: also measure quantflow's own SVD on the bf16-rounded weights")
    ap.add_argument("--device", default="cpu", help="with --binary: cpu, cuda or cuda:N")
    ap.add_argument("--only-binary", action="store_true", help="with --binary: skip the numpy variants")
    args = ap.parse_args(argv)
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs, k {args.k}, alpha {args.alpha}, seed {args.seed}, "
          f"{'iid' if args.iid else 'structured'} weights, target overlap >= {TARGET}")
    results = {}
    for m, n in SHAPES[args.shapes]:
        for setting, gflop, ou, ov in bench_shape(m, n, args):
            ok, total = results.get(setting, (True, 0.0))
            results[setting] = (ok and min(ou, ov) >= TARGET, total + gflop)
    passing = sorted((total, s) for s, (ok, total) in results.items() if ok)
    kind = "iid" if args.iid else "structured"
    if passing:
        total, (name, p, q) = passing[0]
        print(f"\nrecommended ({kind}): {name} p={p} q={q}, the fewest flops ({total:.1f} GFLOP over all shapes) "
              f"with overlap_u and overlap_v >= {TARGET} on every shape")
    else:
        print(f"\nrecommended ({kind}): none; no setting reaches overlap >= {TARGET} on every shape")
    return 0


if __name__ == "__main__":
    sys.exit(main())
