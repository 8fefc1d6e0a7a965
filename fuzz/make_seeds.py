#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/): small files, a few KB each.

Usage: fuzz/make_seeds.py QUANTFLOW_BINARY [OUT_DIR]   (the binary converts the tiny model into every format)
The tiny model has the cases of tests' small_model.safetensors (biases, a 1-D norm, an odd shape, an all-zero
weight, a 4-D conv, F32 and F16 weights, a non-weight tensor, metadata) at a fraction of its size.
"""
import json
import pathlib
import random
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tensor_bytes(dtype, count, rng, zero=False):
    values = [0.0 if zero else rng.gauss(0.0, 0.05) for _ in range(count)]
    if dtype == "F32":
        return struct.pack(f"<{count}f", *values)
    if dtype == "F16":
        return struct.pack(f"<{count}e", *values)
    return b"".join(struct.pack("<f", v)[2:] for v in values)  # BF16: the high half (truncation is fine here)


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tiny_model():
    rng = random.Random(7)
    size = {"F32": 4, "F16": 2, "BF16": 2}
    spec = [("f32.proj.weight", "F32", [16, 16]), ("blocks.0.attn.norm_q.weight", "BF16", [8]),
            ("blocks.0.attn.qkv.bias", "BF16", [48]), ("blocks.0.attn.qkv.weight", "BF16", [48, 16]),
            ("blocks.0.mlp.fc1.weight", "BF16", [32, 16]), ("conv.weight", "BF16", [4, 2, 3, 3]),
            ("odd.proj.bias", "BF16", [10]), ("odd.proj.weight", "BF16", [10, 30]), ("pos_embed", "BF16", [1, 2, 8]),
            ("time_embedding.0.weight", "BF16", [16, 8]), ("zero.proj.weight", "BF16", [16, 16]),
            ("f16.proj.weight", "F16", [16, 32])]
    tensors = []
    for name, dtype, shape in spec:
        count = 1
        for d in shape:
            count *= d
        tensors.append((name, dtype, shape, tensor_bytes(dtype, count, rng, zero=name.startswith("zero"))))
    return safetensors(tensors, {"format": "pt", "note": "synthetic"})


# convert's option byte (fuzz/fuzz_convert.cpp): bit 0 int8, bits 1-2 scaling mode, bit 3 legacy, bit 4 heur,
# bit 5 input_scale, bit 6 lodewise, bit 7 full_precision_matrix_mult.
FORMATS = {
    "fp8_tensor": (0x00, []), "fp8_row": (0x02, ["--scaling_mode", "row"]),
    "fp8_block": (0x04, ["--scaling_mode", "block"]), "fp8_block2d": (0x06, ["--scaling_mode", "block2d"]),
    "int8_block": (0x01, ["--int8"]), "int8_lodewise": (0x41, ["--int8", "--kernel_backend", "lodewise"]),
    "int8_tensor": (0x03, ["--int8", "--scaling_mode", "row"]), "fp8_legacy": (0x28, ["--input_scale"]),
}


def main():
    binary = sys.argv[1]
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "fuzz" / "corpus"
    if out.exists():
        shutil.rmtree(out)
    for target in ("header", "comfy_quant", "profiles", "manifest", "convert"):
        (out / target).mkdir(parents=True)
    model = tiny_model()
    (out / "header" / "tiny_model").write_bytes(model)
    (out / "header" / "empty").write_bytes(safetensors([]))
    (out / "header" / "scalar_null_metadata").write_bytes(
        struct.pack("<Q", 72) + b'{"__metadata__":null,"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}' + bytes(8))
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "tiny.safetensors"
        src.write_bytes(model)
        comfy = set()
        for name, (bits, flags) in FORMATS.items():
            dst = pathlib.Path(tmp) / f"{name}.safetensors"
            legacy = bits & 0x08
            args = [binary, "-i", str(src), "-o", str(dst), "--simple", "--block_size", "16", "--manual_seed", "1",
                    "--device", "cpu", "--progress", "none"] + ([] if legacy else ["--comfy_quant"]) + flags
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            quantized = dst.read_bytes()
            (out / "header" / name).write_bytes(quantized)
            (out / "convert" / f"tiny_as_{name}").write_bytes(bytes([bits]) + model)
            (out / "convert" / f"{name}_again").write_bytes(bytes([bits]) + quantized)
            n = struct.unpack("<Q", quantized[:8])[0]
            header = json.loads(quantized[8:8 + n])
            for key, t in header.items():
                if key.endswith(".comfy_quant"):
                    begin, end = t["data_offsets"]
                    comfy.add(quantized[8 + n + begin:8 + n + end])
            record = header.get("__metadata__", {}).get("quantflow")
            if record:
                (out / "comfy_quant" / f"record_{name}").write_text(record)
    for i, text in enumerate(sorted(comfy)):
        (out / "comfy_quant" / f"comfy_{i}").write_bytes(text)
    for kind in ("models", "hardware"):
        for f in sorted((ROOT / "profiles" / kind).glob("*.json")):
            shutil.copy(f, out / "profiles" / f"{kind}_{f.name}")
    (out / "profiles" / "size").write_text("1.5GiB")
    manifests = {
        "readme": {"defaults": {"simple": True}, "files": ["a.safetensors", {"input": "b.safetensors", "output": "b_int8.safetensors",
                                                                              "int8": True, "block_size": 128, "model": "wan"}]},
        "array": ["a.safetensors", {"input": "b.safetensors", "simple": False, "exclude_layers": "norm|bias"}],
        "lists": {"files": [{"input": "a.safetensors", "model": ["wan", "t5xxl"], "scaling_mode": "row", "lr": 0.5,
                             "memory_budget": "2GiB", "shard": "0/2"}]},
    }
    for name, m in manifests.items():
        (out / "manifest" / name).write_text(json.dumps(m))


if __name__ == "__main__":
    main()
