#!/usr/bin/env python3
"""Kill soak (issue 12): `quantflow batch --resume` survives SIGKILL at any moment.

Generates FILES small models, converts them once without interruption (the reference), then starts the same
batch (--concurrent-files 3, --resume) into a second directory and SIGKILLs it after a random delay, KILLS
times, resuming each time. After every kill, each published output must already be byte-identical to the
reference (a file is renamed into place only when complete). A last run finishes the batch; then every
output must be byte-identical to the reference and valid for `quantflow inspect`, and no temp file or lock
file may be left.

Usage: tools/kill_soak.py QUANTFLOW WORKDIR [--files 50] [--kills 30] [--seed 1]
Prints one summary line; exit 0 when every check passed, 1 otherwise. WORKDIR is emptied first.
"""
import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np

BATCH_FLAGS = ["--comfy_quant", "--optimizer", "adamw", "--num_iter", "60", "--manual_seed", "0",
               "--progress", "none", "--concurrent-files", "3"]


def write_model(path, rng):
    """Three [192, 256] bf16 layers with biases and a norm weight (copied through): ~300 KB."""
    tensors = {}
    for i in range(3):
        tensors[f"blocks.{i}.proj.weight"] = ([192, 256], rng.standard_normal((192, 256), dtype=np.float32) * 0.02)
        tensors[f"blocks.{i}.proj.bias"] = ([192], rng.standard_normal(192, dtype=np.float32) * 0.02)
    tensors["norm.weight"] = ([256], np.ones(256, dtype=np.float32))
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        bf16 = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()  # truncation is fine for data
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(bf16)]}
        blobs.append(bf16)
        offset += len(bf16)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def batch(binary, inputs, out_dir):
    return [binary, "batch", inputs, "--out-dir", out_dir, "--resume"] + BATCH_FLAGS


def published(out_dir):
    return sorted(f for f in os.listdir(out_dir) if not f.startswith(".")) if os.path.isdir(out_dir) else []


def hidden(out_dir):
    return sorted(f for f in os.listdir(out_dir) if f.startswith(".")) if os.path.isdir(out_dir) else []


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("quantflow")
    parser.add_argument("workdir")
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    start = time.monotonic()
    failures = []

    shutil.rmtree(args.workdir, ignore_errors=True)
    inputs, clean, soak = (os.path.join(args.workdir, d) for d in ("in", "clean", "soak"))
    os.makedirs(inputs)
    rng = np.random.default_rng(args.seed)
    for i in range(args.files):
        write_model(os.path.join(inputs, f"m{i:03d}.safetensors"), rng)

    t0 = time.monotonic()
    ref = subprocess.run(batch(args.quantflow, inputs, clean), capture_output=True, text=True)
    clean_seconds = time.monotonic() - t0
    if ref.returncode != 0 or len(published(clean)) != args.files:
        print(ref.stderr[-3000:])
        print(f"kill soak: FAILED: the clean run exited {ref.returncode} with {len(published(clean))} of {args.files} outputs")
        return 1

    # When to kill: one kill in five lands in the first 0.3 s (startup, resume checks, stale temp removal);
    # the others after a random delay around `mean_delay`, which adapts so that the outputs grow steadily
    # and the batch is still unfinished after the last kill (each kill also throws away the files in flight).
    pick = random.Random(args.seed)
    per_file = clean_seconds * 3 / args.files
    mean_delay = 2 * per_file + 0.1
    kills = runs = 0
    stale_seen = max_stale = mid_file = 0
    progress = []
    moments = []  # seconds from start to SIGKILL, per run
    capped = 0
    while kills < args.kills:
        runs += 1
        child = subprocess.Popen(batch(args.quantflow, inputs, soak), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = pick.uniform(0, 0.3) if pick.random() < 0.2 else pick.uniform(0.5, 1.5) * mean_delay
        # Never past `cap` outputs: a slow moment of the machine must not let the batch finish before the last kill.
        cap = min(args.files - 4, (args.files - 4) * (kills + 1) // args.kills + args.files // 4)
        started = time.monotonic()
        deadline = started + delay
        while child.poll() is None and time.monotonic() < deadline and len(published(soak)) < cap:
            time.sleep(0.005)
        capped += time.monotonic() < deadline
        moments.append(time.monotonic() - started)
        if child.poll() is not None:
            failures.append(f"run {runs} finished (exit {child.returncode}) before kill {kills + 1}; the soak needs slower files")
            break
        child.send_signal(signal.SIGKILL)
        child.communicate()
        if child.returncode != -signal.SIGKILL:
            failures.append(f"run {runs}: exit {child.returncode}, expected SIGKILL")
        kills += 1
        done = published(soak)
        progress.append(len(done))
        target = args.files * kills / (args.kills + 3)
        mean_delay = min(max(mean_delay * (1.5 if len(done) < target else 0.7), 0.2 * per_file), 10 * per_file + 1)
        temps = [f for f in hidden(soak) if ".qf-tmp." in f]
        stale_seen += len(temps)
        mid_file += bool(temps)
        max_stale = max(max_stale, len(temps))
        for f in done:
            if not os.path.exists(os.path.join(clean, f)):
                failures.append(f"after kill {kills}: unexpected output {f}")
            elif not same_bytes(os.path.join(soak, f), os.path.join(clean, f)):
                failures.append(f"after kill {kills}: published {f} differs from the clean run")

    runs += 1
    final = subprocess.run(batch(args.quantflow, inputs, soak), capture_output=True, text=True)
    summary = next((line for line in final.stderr.splitlines() if " files: " in line), "")
    if final.returncode != 0:
        failures.append(f"final resume exited {final.returncode}: {final.stderr[-2000:]}")
    if published(soak) != published(clean):
        failures.append(f"final outputs {len(published(soak))} != clean {len(published(clean))}")
    for f in published(clean):
        path = os.path.join(soak, f)
        if not os.path.exists(path):
            continue
        if not same_bytes(path, os.path.join(clean, f)):
            failures.append(f"final: {f} differs from the clean run")
        check = subprocess.run([args.quantflow, "inspect", path], capture_output=True, text=True)
        if check.returncode != 0:
            failures.append(f"final: inspect {f} exited {check.returncode}: {check.stderr.strip()}")
    if hidden(soak):
        failures.append(f"left behind: {hidden(soak)}")

    print(f"kill soak: {args.files} files, concurrent_files 3; clean run {clean_seconds:.1f} s; {kills} SIGKILLs over "
          f"{runs} runs ({runs - 1} resumed after a kill; killed {min(moments):.2f}..{max(moments):.2f} s after the start, mean {sum(moments) / max(len(moments), 1):.2f} s); {capped} killed early at the output cap; outputs published after each kill: "
          f"{progress}; {mid_file} kills left temp files ({stale_seen} in all, at most {max_stale} at once); final resume: {summary.strip()}; "
          f"total {time.monotonic() - start:.1f} s")
    for f in failures[:20]:
        print("  FAILED: " + f)
    print("kill soak: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
