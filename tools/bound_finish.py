#!/usr/bin/env python3
"""How far can any rounding-aware finish lower the projected error within a Frobenius budget? (issue 10)

For every FP8 tensor-wise layer of ORIGINAL that QUANTIZED (a `--simple` output: round-to-nearest) holds, this
solves the continuous relaxation of the finish's problem:

    minimise ||P0 + sum_i d_i a_i||^2   subject to   sum_i c_i d_i <= B,   0 <= d_i <= 1

where every element i = (r, c) is a candidate move to its grid neighbour across W (delta_i, one step, the only
move that can lower ||W_hat - W|| growth per step), a_i = delta_i u_r v_c^T its change of the k x k projected
error P = U^T (W_hat - W) V^T, c_i = 2 e_i delta_i + delta_i^2 its growth of ||W_hat - W||^2, and B the budget:
((1 + pct/100)^2 - 1) ||E_rtn||^2. Any set of one-step moves is a 0/1 point of this set, so the relaxed optimum
is a lower bound on what a finish can reach; Frank-Wolfe (a fractional knapsack per step, exact line search)
reports both a feasible point and the duality-gap bound, and stops when they meet. U, V: an accurate top-k SVD
(randomized, 8 power iterations on k + 32 columns), as `quantflow compare` uses.

  python3 tools/bound_finish.py ORIGINAL.safetensors RTN.safetensors [--budget 0.01] [--k 16] [--layers REGEX]

Needs numpy, torch (e4m3 decoding) and safetensors. Prints per layer the bound on projected error / RTN's.
"""
import argparse, re, statistics

import numpy as np
import torch
from safetensors import safe_open


def e4m3(codes):
    return torch.from_numpy(codes).view(torch.float8_e4m3fn).float().numpy()


def candidates(w, codes, scale):
    """Each element's error, its one-step move towards W (delta, 0 where none) and the move's cost."""
    r = e4m3(codes) * scale
    e = (r - w).astype(np.float64)
    mag = (codes & 0x7F).astype(np.int32)
    index = np.where(codes & 0x80, -mag, mag) + np.where(e > 0, -1, 1)
    moved = np.where(index < 0, 0x80 | -index, index).astype(np.uint8)
    delta = (e4m3(moved) * scale - r).astype(np.float64)
    delta[(np.abs(index) > 126) | (e == 0)] = 0  # past the grid's end (448) or NaN, or already exact
    return e, delta, 2 * e * delta + delta * delta


def top_k(w, k, seed=0):
    rng = np.random.default_rng(seed)
    y = w @ rng.standard_normal((w.shape[1], k + 32))
    for _ in range(8):
        y, _ = np.linalg.qr(y)
        y = w @ (w.T @ y)
    q, _ = np.linalg.qr(y)
    u, _, vt = np.linalg.svd(q.T @ w, full_matrices=False)
    return q @ u[:, :k], vt[:k]


def bound(w, codes, scale, k, budget_pct, iterations, tol):
    e, delta, cost = candidates(w, codes, scale)
    u, v = top_k(w.astype(np.float64), k)
    p0 = u.T @ e @ v.T
    budget = ((1 + budget_pct / 100) ** 2 - 1) * np.sum(e * e)
    c = cost.ravel()
    d = np.zeros(c.size)
    p = p0.copy()
    lower = 0.0
    for _ in range(iterations):
        g = (2 * (u @ p @ v) * delta).ravel()  # the gradient of ||P||^2 in d
        # Linear minimisation over the feasible set: free moves first, then the best gradient per cost until B.
        s = np.zeros_like(c)
        free = (g < 0) & (c <= 0)
        s[free] = 1
        paid = np.flatnonzero((g < 0) & (c > 0))
        order = paid[np.argsort(g[paid] / c[paid])]
        spent = np.cumsum(c[order])
        room = budget - c[free].sum()
        n = int(np.searchsorted(spent, room))
        s[order[:n]] = 1
        if n < order.size:
            s[order[n]] = (room - (spent[n - 1] if n else 0.0)) / c[order[n]]
        f = float(np.sum(p * p))
        lower = max(lower, f - float(g @ (d - s)))  # convexity: f(any feasible x) >= f(d) + g.(x - d) >= this
        step = u.T @ ((s - d).reshape(w.shape) * delta) @ v.T
        den = float(np.sum(step * step))
        gamma = 0.0 if den == 0 else min(1.0, max(0.0, -float(np.sum(p * step)) / den))
        d += gamma * (s - d)
        p += gamma * step
        if f - lower <= tol * f:
            break
    norm0 = np.linalg.norm(p0)
    return np.linalg.norm(p) / norm0, np.sqrt(max(lower, 0.0)) / norm0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("rtn", help="the --simple (round-to-nearest, FP8 tensor-wise) output of ORIGINAL")
    ap.add_argument("--budget", type=float, default=0.01, help="percent of ||W_hat - W|| (quantflow's default 0.01)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--layers", default=".")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--tol", type=float, default=1e-3, help="stop when the gap is this share of ||P||^2")
    a = ap.parse_args()
    reached, bounds = [], []
    with safe_open(a.original, "pt") as orig, safe_open(a.rtn, "pt") as rtn:
        names = set(rtn.keys())
        for name in sorted(orig.keys()):
            scale_name = name.replace(".weight", ".weight_scale")
            if not name.endswith(".weight") or scale_name not in names or not re.search(a.layers, name):
                continue
            q = rtn.get_tensor(name)
            if q.dtype != torch.float8_e4m3fn or rtn.get_tensor(scale_name).numel() != 1:
                continue
            w = orig.get_tensor(name).float().numpy()
            at, lb = bound(w, q.view(torch.uint8).numpy(), rtn.get_tensor(scale_name).float().item(), a.k, a.budget,
                           a.iterations, a.tol)
            reached.append(at)
            bounds.append(lb)
            print(f"{name:40s} {list(w.shape)}  relaxed optimum {at:.4f}  lower bound {lb:.4f}  (x RTN's projected error)",
                  flush=True)
    if bounds:
        print(f"median over {len(bounds)} layers: lower bound {statistics.median(bounds):.4f} x RTN at +{a.budget}% Frobenius, k {a.k}")


if __name__ == "__main__":
    main()
