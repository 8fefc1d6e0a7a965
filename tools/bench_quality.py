#!/usr/bin/env python3
"""Learned rounding's quality and cost on weights with the structure of trained layers (issue 10).

Generates a WAN-shaped model with tools/make_structured_model.py (power-law spectrum, noise bulk, outlier input
channels; or --iid for i.i.d. Gaussian weights), converts it with --simple (round-to-nearest) and with each
learned mode, and judges every output with `quantflow compare --json` (its accurate SVD). Prints per mode: wall
time and its ratio to --simple (the faster of two --simple runs, page cache warm), the median over layers of
projected error / round-to-nearest's, and the Frobenius error change against round-to-nearest.

  python3 tools/bench_quality.py --binary build/quantflow --workdir /tmp/q [--blocks 1] [--iid] [--k 16]
         [--modes default,off,adamw,radam,budget=0.1] [--device cpu|cuda] [--format '--nvfp4']
"""
import argparse, json, os, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = {"default": [], "thorough": ["--rounding-effort", "thorough"], "off": ["--rounding-aware", "off"], "adamw": ["--optimizer", "adamw"], "radam": ["--optimizer", "radam"]}


def run(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(HERE, "..", "build", "quantflow"))
    ap.add_argument("--workdir", default="/tmp/qf_quality")
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--shapes", default="wan")
    ap.add_argument("--iid", action="store_true")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--modes", default="default,off")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--format", default="", help="format flags for every run, e.g. '--nvfp4' (default: fp8 tensor-wise)")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    kind = "iid" if a.iid else "structured"
    model = os.path.join(a.workdir, f"{kind}_{a.shapes}_{a.blocks}.safetensors")
    if not os.path.exists(model):
        subprocess.run([sys.executable, os.path.join(HERE, "make_structured_model.py"), model, "--blocks", str(a.blocks),
                        "--shapes", a.shapes] + (["--iid"] if a.iid else []), check=True)
    base = [a.binary, "-i", model, "--overwrite", "--manual_seed", "0", "--progress", "none", "--wan", "--comfy_quant",
            "--device", a.device] + a.format.split()

    def convert(name, extra):
        out = os.path.join(a.workdir, f"{kind}_{name}.safetensors")
        secs = run(base + ["-o", out] + extra)
        rep = json.loads(subprocess.run([a.binary, "compare", model, out, "--json", "--k", str(a.k), "--device", a.device],
                                        check=True, capture_output=True, text=True).stdout)
        return secs, {l["name"]: l for l in rep["layers"]}

    simple_secs = min(run(base + ["-o", os.path.join(a.workdir, "warm.safetensors"), "--simple"]) for _ in range(2))
    _, rtn = convert("simple", ["--simple"])
    print(f"model {model} ({kind}), k {a.k}, device {a.device}; --simple {simple_secs:.2f} s")
    print(f"{'mode':8} {'wall s':>8} {'x simple':>9} {'proj/rtn median':>16} {'range':>17} {'frob change':>12}")
    for mode in a.modes.split(","):
        # budget=X: the default mode with --rounding-budget X (percent)
        extra = ["--rounding-budget", mode.split("=")[1]] if mode.startswith("budget=") else MODES[mode]
        secs, got = convert(mode.replace("=", ""), extra)
        ratios = [got[n]["projected_error"] / rtn[n]["projected_error"] for n in rtn if rtn[n]["projected_error"] > 0]
        frob = sum(got[n]["relative_error"] ** 2 for n in rtn) / sum(rtn[n]["relative_error"] ** 2 for n in rtn)
        print(f"{mode:8} {secs:8.2f} {secs / simple_secs:9.2f} {statistics.median(ratios):16.4f} "
              f"{min(ratios):8.4f}-{max(ratios):8.4f} {100 * (frob ** 0.5 - 1):+11.4f}%")


if __name__ == "__main__":
    main()
