#!/usr/bin/env python3
"""GPU-machine benchmark (run by tools/gpu_run.sh): quantflow --device cuda and --device cpu on a generated
WAN 2.1 14B-shaped model, beside the disk's own read and read+write (fdatasync) time for the same bytes,
measured in the same run. Reports wall time, peak RSS, peak GPU memory and GPU busy fraction (nvidia-smi
sampled every 100 ms), and ratios against the disk floor.

usage: bench_gpu.py --binary PATH [--workdir /tmp] [--blocks 4] [--modes simple,int8,nvfp4,mxfp8,convrot,w4a4,...]
"""
import argparse
import os
import subprocess
import sys
import threading
import time

MODES = {
    "simple": ["--comfy_quant", "--simple"],
    "int8": ["--comfy_quant", "--simple", "--int8", "--block_size", "128"],
    "nvfp4": ["--comfy_quant", "--simple", "--nvfp4"],
    "mxfp8": ["--comfy_quant", "--simple", "--mxfp8"],
    "convrot": ["--comfy_quant", "--simple", "--int8", "--convrot"],
    "w4a4": ["--comfy_quant", "--simple", "--w4a4"],
    "convrot_learned": ["--comfy_quant", "--int8", "--convrot"],
    "nvfp4_learned": ["--comfy_quant", "--nvfp4"],
    "original": ["--comfy_quant", "--optimizer", "original", "--num_iter", "500", "--lr", "0.01", "--top_p", "0.01",
                 "--min_k", "1", "--max_k", "16"],
    "thorough": ["--comfy_quant", "--rounding-effort", "thorough"],
    "adamw": ["--comfy_quant", "--optimizer", "adamw", "--num_iter", "500", "--lr", "0.01", "--top_p", "0.01",
              "--min_k", "1", "--max_k", "16"],
    "radam": ["--comfy_quant", "--optimizer", "radam", "--num_iter", "500", "--lr", "0.01", "--top_p", "0.01",
              "--min_k", "1", "--max_k", "16"],
}
# The reference's newer releases changed its defaults: the seed's are spelled out.
REFERENCE_EXTRA = ["--lr_schedule", "adaptive", "--early_stop_stall", "500", "--early_stop_lr", "1e-8", "--early_stop_loss", "1e-8"]


class GpuSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.stop = False
        self.mem = 0
        self.busy = []

    def run(self):
        while not self.stop:
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split(",")
                self.mem = max(self.mem, int(out[0]))
                self.busy.append(int(out[1]))
            except Exception:
                pass
            time.sleep(0.1)


def timed(cmd, timeout=None):
    sampler = GpuSampler()
    sampler.start()
    start = time.monotonic()
    with open(os.devnull, "w") as quiet:
        proc = subprocess.Popen(cmd, stdout=quiet, stderr=subprocess.PIPE, text=True)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        if timer:
            timer.cancel()
    wall = time.monotonic() - start
    sampler.stop = True
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    busy = sum(1 for b in sampler.busy if b > 0) / max(1, len(sampler.busy))
    if code != 0:
        print(err, file=sys.stderr)
    return code, wall, usage.ru_maxrss * 1024, sampler.mem, busy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--workdir", default="/tmp")
    ap.add_argument("--blocks", default="4")
    ap.add_argument("--modes", default="simple,int8")
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--reference", action="store_true", help="also time the reference (python -m convert_to_quant) on the GPU")
    ap.add_argument("--reference-timeout", type=float, default=240)
    ap.add_argument("--reference-modes", default="", help="time the reference only for these modes (default: all of --modes)")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    model = os.path.join(a.workdir, "wan_bench.safetensors")
    if not os.path.exists(model):
        subprocess.run([sys.executable, os.path.join(here, "make_demo_model.py"), "--preset", "wan14b", "--blocks", a.blocks,
                        "-o", model], check=True)
    size = os.path.getsize(model)
    _, read_s, _, _, _ = timed(["dd", f"if={model}", "of=/dev/null", "bs=64M"])
    copy = os.path.join(a.workdir, "copy.safetensors")
    _, rw_s, _, _, _ = timed(["dd", f"if={model}", f"of={copy}", "bs=64M", "conv=fdatasync"])
    os.remove(copy)
    print(f"model {size / 1e9:.2f} GB; read {read_s:.2f} s ({size / read_s / 1e9:.2f} GB/s); read+write (fdatasync) {rw_s:.2f} s")
    print(f"{'mode':15s} {'device':6s} {'wall s':>7s} {'GB/s':>6s} {'vs r+w':>7s} {'RSS MiB':>8s} {'GPU MiB':>8s} {'GPU busy':>8s}")
    for mode in a.modes.split(","):
        for device in a.devices.split(","):
            out = os.path.join(a.workdir, f"out_{mode}_{device}.safetensors")
            label = device
            rc, wall, rss, mem, busy = timed([a.binary, "-i", model, "-o", out, "--overwrite", "--manual_seed", "0", "--progress",
                                               "none", "--wan", "--device", device, *MODES[mode]])
            status = "" if rc == 0 else f"  FAILED rc={rc}"
            print(f"{mode:15s} {label:6s} {wall:7.2f} {size / wall / 1e9:6.2f} {wall / rw_s:7.2f} {rss / 2**20:8.0f} {mem:8d} "
                  f"{busy:8.0%}{status}", flush=True)
            if os.path.exists(out):
                os.remove(out)
        if a.reference and (not a.reference_modes or mode in a.reference_modes.split(",")):
            out = os.path.join(a.workdir, f"ref_{mode}.safetensors")
            args = MODES[mode]
            extra = REFERENCE_EXTRA if mode in ("original", "adamw") else []
            rc, wall, rss, mem, busy = timed([sys.executable, "-m", "convert_to_quant.convert_to_quant", "-i", model, "-o", out,
                                               "--manual_seed", "0", "--wan", *args, *extra], timeout=a.reference_timeout)
            status = "" if rc == 0 else (f"  STOPPED after {a.reference_timeout:.0f} s" if rc < 0 else f"  FAILED rc={rc}")
            print(f"{mode:15s} {'ref':6s} {wall:7.2f} {size / wall / 1e9:6.2f} {wall / rw_s:7.2f} {rss / 2**20:8.0f} {mem:8d} "
                  f"{busy:8.0%}{status}", flush=True)
            if os.path.exists(out):
                os.remove(out)


if __name__ == "__main__":
    main()
