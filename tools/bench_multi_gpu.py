#!/usr/bin/env python3
"""Several GPUs of one host (issue 13): one conversion on 1 GPU vs every GPU, and a batch of files, beside the
disk's floor measured in the same run.

  1. a WAN 2.1 14B-shaped model of --blocks blocks (default 12, ~8.8 GB): quantflow --devices 0 and --devices all
     in each --modes mode (default: the default mode and adamw); the two outputs must be byte-identical;
  2. a batch of --batch-files copies of a --batch-blocks model (default 4 x 4 blocks, 3.2 GB each) with
     --devices 0 and --devices all (default mode).

The disk floor of a run is what the disk needs for the same bytes: read the input (dd to /dev/null) plus write
the output's bytes with fdatasync (dd conv=fdatasync); the input read + write of the same bytes (the brief's
"read and write the same bytes") is printed too. Prints wall time, peak RSS, per-GPU busy fraction, and the
ratios 1 GPU / N GPUs and time / max(disk floor, 1-GPU time / N).

usage: bench_multi_gpu.py --binary PATH [--workdir /tmp] [--blocks 12] [--modes default,adamw]
                          [--batch-files 4] [--batch-blocks 4] [--skip-batch]
"""
import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import threading
import time

MODES = {
    "default": ["--comfy_quant"],
    "adamw": ["--comfy_quant", "--optimizer", "adamw"],
    "simple": ["--comfy_quant", "--simple"],
}


class GpuSampler(threading.Thread):
    """nvidia-smi every 100 ms: each GPU's busy fraction and peak memory."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = False
        self.samples = []

    def run(self):
        while not self.stop:
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.strip().splitlines()
                self.samples.append([tuple(int(x) for x in line.split(",")) for line in out])
            except Exception:
                pass
            time.sleep(0.1)

    def summary(self):
        if not self.samples:
            return "-"
        gpus = len(self.samples[0])
        busy = [sum(1 for s in self.samples if len(s) > g and s[g][1] > 0) / len(self.samples) for g in range(gpus)]
        mem = [max(s[g][0] for s in self.samples if len(s) > g) for g in range(gpus)]
        return " ".join(f"{b:.0%}/{m}MiB" for b, m in zip(busy, mem))


def timed(cmd):
    sampler = GpuSampler()
    sampler.start()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
    wall = time.monotonic() - start
    sampler.stop = True
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err, file=sys.stderr)
    return code, wall, usage.ru_maxrss * 1024, sampler.summary()


def disk_floor(inputs, output_bytes, workdir):
    """Seconds to read the inputs, to write output_bytes with fdatasync, and to copy the inputs (fdatasync)."""
    read = sum(timed(["dd", f"if={p}", "of=/dev/null", "bs=64M"])[1] for p in inputs)
    scratch = os.path.join(workdir, "floor.bin")
    count = max(1, round(output_bytes / (64 << 20)))
    write = timed(["dd", "if=/dev/zero", f"of={scratch}", "bs=64M", f"count={count}", "conv=fdatasync"])[1]
    os.remove(scratch)
    copy = 0.0
    for p in inputs:
        copy += timed(["dd", f"if={p}", f"of={scratch}", "bs=64M", "conv=fdatasync"])[1]
        os.remove(scratch)
    return read, write, copy


def make_model(here, path, blocks):
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(here, "make_demo_model.py"), "--preset", "wan14b", "--blocks", str(blocks),
                        "-o", path], check=True)


def row(label, wall, rss, gpus, floor, extra=""):
    print(f"{label:34s} {wall:8.2f} {rss / 2**20:8.0f} {wall / floor:8.2f}  {gpus}{extra}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--workdir", default="/tmp")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--modes", default="default,adamw")
    ap.add_argument("--batch-files", type=int, default=4)
    ap.add_argument("--batch-blocks", type=int, default=4)
    ap.add_argument("--skip-batch", action="store_true")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    gpus = len(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip().splitlines())
    print(f"GPUs: {gpus}")
    header = f"{'run':34s} {'wall s':>8s} {'RSS MiB':>8s} {'/floor':>8s}  GPU busy/peak memory per GPU"

    model = os.path.join(a.workdir, f"wan_{a.blocks}b.safetensors")
    make_model(here, model, a.blocks)
    size = os.path.getsize(model)
    for mode in a.modes.split(","):
        outs = {}
        walls = {}
        for devices in ("0", "all"):
            out = os.path.join(a.workdir, f"out_{mode}_{devices}.safetensors")
            rc, wall, rss, busy = timed([a.binary, "-i", model, "-o", out, "--overwrite", "--manual_seed", "0", "--progress", "none",
                                         "--wan", "--devices", devices, *MODES[mode]])
            if rc != 0:
                print(f"{mode} --devices {devices}: FAILED rc={rc}")
                return 1
            outs[devices], walls[devices] = out, (wall, rss, busy)
        out_bytes = os.path.getsize(outs["0"])
        read, write, copy = disk_floor([model], out_bytes, a.workdir)
        floor = read + write
        print(f"\n{mode}: model {size / 1e9:.2f} GB -> {out_bytes / 1e9:.2f} GB; disk: read {read:.2f} s + write output (fdatasync) "
              f"{write:.2f} s = floor {floor:.2f} s; read+write of the input (fdatasync) {copy:.2f} s")
        print(header)
        for devices in ("0", "all"):
            wall, rss, busy = walls[devices]
            row(f"{mode} --devices {devices}", wall, rss, busy, floor)
        same = filecmp.cmp(outs["0"], outs["all"], shallow=False)
        one, many = walls["0"][0], walls["all"][0]
        target = max(floor, one / gpus)
        print(f"speed-up {one / many:.2f}x on {gpus} GPUs; N-GPU time / max(floor, 1-GPU time / {gpus}) = {many / target:.2f}; "
              f"outputs {'byte-identical' if same else 'DIFFER'}")
        for out in outs.values():
            os.remove(out)

    if a.skip_batch:
        return 0
    source = os.path.join(a.workdir, f"wan_{a.batch_blocks}b.safetensors")
    make_model(here, source, a.batch_blocks)
    batch_dir = os.path.join(a.workdir, "batch_in")
    os.makedirs(batch_dir, exist_ok=True)
    inputs = []
    for i in range(a.batch_files):
        p = os.path.join(batch_dir, f"model_{i}.safetensors")
        if not os.path.exists(p):
            shutil.copyfile(source, p)
        inputs.append(p)
    walls = {}
    for devices in ("0", "all"):
        out_dir = os.path.join(a.workdir, f"batch_out_{devices}")
        shutil.rmtree(out_dir, ignore_errors=True)
        rc, wall, rss, busy = timed([a.binary, "batch", *inputs, "--out-dir", out_dir, "--manual_seed", "0", "--progress", "none",
                                     "--wan", "--devices", devices, "--comfy_quant", "--report", out_dir + ".json"])
        if rc != 0:
            print(f"batch --devices {devices}: FAILED rc={rc}")
            return 1
        walls[devices] = (wall, rss, busy, out_dir)
    out_bytes = sum(os.path.getsize(os.path.join(walls["0"][3], f)) for f in os.listdir(walls["0"][3]))
    read, write, copy = disk_floor(inputs, out_bytes, a.workdir)
    floor = read + write
    print(f"\nbatch of {a.batch_files} x {os.path.getsize(source) / 1e9:.2f} GB: disk: read {read:.2f} s + write outputs (fdatasync) "
          f"{write:.2f} s = floor {floor:.2f} s; read+write of the inputs (fdatasync) {copy:.2f} s")
    print(header)
    for devices in ("0", "all"):
        wall, rss, busy, _ = walls[devices]
        row(f"batch --devices {devices}", wall, rss, busy, floor)
    same = all(filecmp.cmp(os.path.join(walls["0"][3], f), os.path.join(walls["all"][3], f), shallow=False)
               for f in os.listdir(walls["0"][3]))
    one, many = walls["0"][0], walls["all"][0]
    target = max(floor, one / gpus)
    print(f"speed-up {one / many:.2f}x; batch time / max(floor, 1-GPU time / {gpus}) = {many / target:.2f} (target <= 1.2); "
          f"outputs {'byte-identical' if same else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
