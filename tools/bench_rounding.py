#!/usr/bin/env python3
"""Per-tensor learned-rounding benchmark on the CPU: quantflow against the reference tool, same machine,
same run.

Two bf16 weights with WAN 2.1 14B shapes (5120x5120 and 13824x5120, normal(0, 0.02)) are written to one
.safetensors file. quantflow converts it once per mode (FP8 tensor, seed defaults: --simple, --optimizer
original / adamw / radam) and reports each layer's optimizer wall time (--report: quantize + SVD + rounding,
no I/O). The reference (PyPI convert-to-quant, CPU PyTorch) is timed through its Python API on the same
tensors by tools/bench_reference_rounding.py, when --reference-python names an interpreter that has it.
Prints a table with the ratio reference / quantflow per tensor and mode, and the issue's targets.

usage: tools/bench_rounding.py [--binary build/quantflow] [--reference-python PY] [--modes simple,original,...]
                               [--workdir DIR] [--json OUT.json]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = {"a.weight": (5120, 5120), "b.weight": (13824, 5120)}
TARGETS = {"original": 20.0, "adamw": 3.0, "radam": 3.0}


def write_weights(path):
    rng = np.random.default_rng(2026)
    header, blobs, offset = {}, [], 0
    for name, shape in sorted(SHAPES.items()):
        x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        u = x.view(np.uint32)
        bf16 = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        blob = bf16.tobytes()
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def run_quantflow(binary, weights, mode, work, device):
    report = os.path.join(work, f"report_{mode}.json")
    args = [binary, "-i", weights, "-o", os.path.join(work, f"out_{mode}.safetensors"), "--overwrite", "--comfy_quant",
            "--manual_seed", "0", "--progress", "none", "--report", report, "--device", device]
    args += ["--simple"] if mode == "simple" else ["--optimizer", mode, "--num_iter", "500", "--lr", "0.01", "--top_p", "0.01",
                                                  "--min_k", "1", "--max_k", "16"]
    start = time.monotonic()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    with open(report) as f:
        layers = json.load(f)["layers"]
    return {l["name"]: l["seconds"] for l in layers}, wall


def run_reference(python, weights, modes):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_reference_rounding.py")
    times = {}
    with subprocess.Popen([python, script, weights, *modes], stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:  # streamed: a run cut short still shows what finished
            if line.startswith("{"):
                r = json.loads(line)
                times[(r["tensor"], r["mode"])] = r["seconds"]
                print(f"reference {r['tensor']} {r['mode']:9s} {r['seconds']:9.2f} s ({r['threads']} threads, torch {r['torch']})",
                      file=sys.stderr, flush=True)
    return times


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(root, "build", "quantflow"))
    ap.add_argument("--reference-python", default="", help="python with torch + convert-to-quant (skipped if empty)")
    ap.add_argument("--modes", default="simple,original,adamw,radam")
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--device", default="cpu", help="quantflow --device (default cpu: issue 3 compares CPU with CPU)")
    a = ap.parse_args()
    modes = a.modes.split(",")
    with tempfile.TemporaryDirectory(dir=a.workdir, prefix="qf_bench_rounding.") as work:
        weights = os.path.join(work, "weights.safetensors")
        write_weights(weights)
        ours = {}
        for mode in modes:
            per_layer, wall = run_quantflow(a.binary, weights, mode, work, a.device)
            for name, s in per_layer.items():
                ours[(name, mode)] = s
            print(f"quantflow {mode:9s} whole run {wall:7.2f} s; per tensor: " +
                  ", ".join(f"{n} {t:.2f} s" for n, t in sorted(per_layer.items())), file=sys.stderr, flush=True)
        ref = run_reference(a.reference_python, weights, modes) if a.reference_python else {}
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs; quantflow {commit}; per-tensor seconds (FP8 tensor, seed defaults)")
    print(f"{'tensor':22s} {'mode':9s} {'quantflow':>10s} {'reference':>10s} {'ratio':>8s}  target")
    rows = []
    for name, shape in sorted(SHAPES.items()):
        for mode in modes:
            q, r = ours.get((name, mode)), ref.get((name, mode))
            ratio = r / q if q and r else None
            target = TARGETS.get(mode)
            verdict = "" if ratio is None or target is None else (f">= {target:.0f}x " + ("met" if ratio >= target else "MISSED"))
            print(f"{name} {shape[0]}x{shape[1]:<6d} {mode:9s} {q:10.3f} " + (f"{r:10.2f} {ratio:7.1f}x" if r else f"{'-':>10s} {'-':>8s}") +
                  f"  {verdict}")
            rows.append({"tensor": name, "shape": shape, "mode": mode, "quantflow_s": q, "reference_s": r, "ratio": ratio})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": platform.node(), "cpus": os.cpu_count(), "commit": commit, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
