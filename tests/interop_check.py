#!/usr/bin/env python3
"""Interop between quantflow and the real Python `safetensors` package (ctest `interop_python`).

usage: python3 interop_check.py QUANTFLOW_BINARY FIXTURES_DIR TMP_DIR

(a) safetensors writes one tensor of every dtype it supports (plus a scalar, an empty tensor and metadata);
    `quantflow inspect` must accept the file and list every tensor, and `quantflow convert` must copy the
    tensors it does not quantize byte for byte. Files safetensors rejects must be rejected too.
(b) quantflow converts FIXTURES_DIR/small_model.safetensors in every output format; safetensors.deserialize
    (the package's full validation) must read each output back, and the tensors must follow SPEC.md section 3.
(c) one line per check, then "N passed, M failed"; the exit status is 1 when anything failed.
"""
import ctypes
import json
import math
import os
import random
import re
import struct
import subprocess
import sys

import safetensors

# (name TensorSpec accepts, safetensors code, bits per element)
DTYPES = [
    ("bool", "BOOL", 8), ("uint8", "U8", 8), ("int8", "I8", 8), ("float8_e5m2", "F8_E5M2", 8),
    ("float8_e4m3fn", "F8_E4M3", 8), ("float8_e8m0fnu", "F8_E8M0", 8), ("float8_e4m3fnuz", "F8_E4M3FNUZ", 8),
    ("float8_e5m2fnuz", "F8_E5M2FNUZ", 8), ("int16", "I16", 16), ("uint16", "U16", 16), ("float16", "F16", 16),
    ("bfloat16", "BF16", 16), ("int32", "I32", 32), ("uint32", "U32", 32), ("float32", "F32", 32),
    ("complex64", "C64", 64), ("float64", "F64", 64), ("int64", "I64", 64), ("uint64", "U64", 64),
    ("float4_e2m1fn_x2", "F4", 4),
]
QUANTIZABLE = {"F32", "F16", "BF16"}
BASE = ["--comfy_quant", "--simple", "--manual_seed", "0", "--progress", "none"]
# variant -> (extra flags, comfy_quant format most layers must carry; None for legacy files)
VARIANTS = {
    "fp8_tensor": ([], "float8_e4m3fn"),
    "fp8_row": (["--scaling_mode", "row"], "float8_e4m3fn_rowwise"),
    "fp8_block": (["--scaling_mode", "block"], "float8_e4m3fn_block3d"),
    "fp8_block2d": (["--scaling_mode", "block2d"], "float8_e4m3fn_blockwise"),
    "int8_blockwise": (["--int8"], "int8_blockwise"),
    "int8_lodewise": (["--int8", "--kernel_backend", "lodewise"], "int8_lodewise"),
    "int8_tensor": (["--int8", "--scaling_mode", "tensor"], "int8_tensorwise"),
    "int8_row": (["--int8", "--scaling_mode", "row"], "int8_tensorwise"),
    "fp8_t5xxl": (["--t5xxl"], "float8_e4m3fn"),
    "legacy": (None, None),
    "legacy_t5xxl": (["--t5xxl"], None),
}
# comfy_quant format -> (weight dtype, expected weight_scale shape from (M, N, group size))
FORMATS = {
    "float8_e4m3fn": ("F8_E4M3", lambda m, n, g: [[1]]),
    "float8_e4m3fn_rowwise": ("F8_E4M3", lambda m, n, g: [[m]]),
    "float8_e4m3fn_block3d": ("F8_E4M3", lambda m, n, g: [[m, n // g, 1]]),
    "float8_e4m3fn_blockwise": ("F8_E4M3", lambda m, n, g: [[m // g, n // g]]),
    "int8_blockwise": ("I8", lambda m, n, g: [[m // g, n // g]]),
    "int8_lodewise": ("I8", lambda m, n, g: [[m, n // g]]),
    "int8_tensorwise": ("I8", lambda m, n, g: [[1], [m, 1]]),
}

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    return ok


def run(args, timeout=600):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except FileNotFoundError as e:
        return None, "", f"cannot run: {e}"
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout} s"


def raw_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def load(path):
    """name -> {"dtype", "shape", "data"}, through the package's own validation."""
    with open(path, "rb") as f:
        return dict(safetensors.deserialize(f.read()))


def supported_dtype_names():
    """The dtype names this safetensors build accepts, from its own error message (None if unreadable)."""
    try:
        safetensors.TensorSpec(dtype="not_a_dtype", shape=[1], data_ptr=0, data_len=1)
    except Exception as e:  # the message lists every supported name
        m = re.search(r"Supported dtypes: (.*)$", str(e))
        return {s.strip() for s in m.group(1).split(",")} if m else None
    return None


def write_all_dtypes(path):
    """One [2, 3] tensor per dtype, a rank-0 scalar, an empty tensor; returns name -> (code, shape, bytes)."""
    rng = random.Random(1234)
    keep_alive, specs, expected = [], {}, {}

    def add(name, pyname, code, storage_shape, nbytes):
        data = bytes(rng.randrange(2) for _ in range(nbytes)) if code == "BOOL" else rng.randbytes(nbytes)
        buf = ctypes.create_string_buffer(data, max(nbytes, 1))
        keep_alive.append(buf)
        spec = safetensors.TensorSpec(dtype=pyname, shape=storage_shape, data_ptr=ctypes.addressof(buf), data_len=nbytes)
        specs[name] = spec
        expected[name] = (code, list(spec.shape), data)

    for pyname, code, bits in DTYPES:
        # float4_e2m1fn_x2 takes the packed storage shape: [2, 3] bytes hold [2, 6] F4 values.
        add(f"t_{code.lower()}", pyname, code, [2, 3], 6 if code == "F4" else 6 * bits // 8)
    add("scalar_f32", "float32", "F32", [], 4)
    add("empty_bf16", "bfloat16", "BF16", [0, 4], 0)
    safetensors.serialize_file(specs, path, metadata={"format": "pt", "source": "interop_check"})
    return expected


def part_a(binary, tmp):
    path = os.path.join(tmp, "all_dtypes.safetensors")
    names = supported_dtype_names()
    if names is not None:
        missing = sorted(names - {p for p, _, _ in DTYPES})
        check("dtype table covers every dtype safetensors accepts", not missing, f"not covered: {missing}")
    expected = write_all_dtypes(path)
    got = load(path)
    bad = [n for n, (code, shape, data) in expected.items()
           if n not in got or (got[n]["dtype"], got[n]["shape"], bytes(got[n]["data"])) != (code, shape, data)]
    check(f"safetensors round trip of {len(expected)} tensors ({len(DTYPES)} dtypes)", not bad, f"differ: {bad}")

    rc, out, err = run([binary, "inspect", path])
    if check("quantflow inspect accepts the all-dtypes file", rc == 0, f"exit {rc}: {err.strip()}"):
        lines = [set(line.split()) for line in out.splitlines()]
        absent = [n for n, (code, _, _) in expected.items() if not any(n in l and code in l for l in lines)]
        check("inspect lists every tensor with its dtype", not absent, f"not listed: {absent}")
    rc, out, err = run([binary, "inspect", path, "--json"])
    try:
        listed = {t["name"]: t for t in json.loads(out)["tensors"]} if rc == 0 else {}
    except (ValueError, KeyError, TypeError):
        listed = {}
    header = raw_header(path)
    wrong = [n for n, (code, shape, _) in expected.items()
             if n not in listed or (listed[n]["dtype"], listed[n]["shape"], listed[n]["data_offsets"])
             != (code, shape, header[n]["data_offsets"])]
    check("inspect --json agrees with the header on dtype, shape and data_offsets", rc == 0 and not wrong,
          f"exit {rc}: {err.strip()}" if rc != 0 else f"disagree: {wrong}")

    out_path = os.path.join(tmp, "all_dtypes_converted.safetensors")
    if os.path.exists(out_path):
        os.remove(out_path)
    rc, _, err = run([binary, "convert", "-i", path, "-o", out_path] + BASE)
    if check("convert of the all-dtypes file succeeds", rc == 0, f"exit {rc}: {err.strip()}"):
        try:
            converted = load(out_path)
        except Exception as e:
            check("safetensors reads the converted all-dtypes file", False, str(e))
            return
        changed = [n for n, (code, shape, data) in expected.items()
                   if code not in QUANTIZABLE and (n not in converted or bytes(converted[n]["data"]) != data
                                                   or converted[n]["dtype"] != code or converted[n]["shape"] != shape)]
        check("every non-float tensor is copied byte for byte", not changed, f"changed: {changed}")

    with open(path, "rb") as f:
        good = f.read()
    end = 8 + struct.unpack("<Q", good[:8])[0]
    malformed = [("a trailing byte", good + b"\0"), ("a truncated data block", good[:-1])]
    if good[end - 1:end] == b" ":  # the writer pads the header with spaces; NUL padding must be rejected
        malformed.append(("NUL header padding", good[:end - 1] + b"\0" + good[end:]))
    for label, data in malformed:
        bad_path = os.path.join(tmp, "rejected.safetensors")
        with open(bad_path, "wb") as f:
            f.write(data)
        try:
            safetensors.deserialize(data)
            check(f"safetensors rejects a file with {label}", False, "accepted")
            continue
        except Exception:
            pass
        rc, _, err = run([binary, "inspect", bad_path])
        lines = err.strip().splitlines()
        check(f"quantflow rejects a file with {label} (exit 1, one stderr line naming it)",
              rc == 1 and len(lines) == 1 and bad_path in lines[0], f"exit {rc}, stderr {err.strip()!r}")


def check_output(variant, path, source, expect_format, t5xxl):
    try:
        out = load(path)
    except Exception as e:
        check(f"{variant}: safetensors.deserialize accepts the output", False, str(e))
        return
    check(f"{variant}: safetensors.deserialize accepts the output", True)
    meta = raw_header(path).get("__metadata__") or {}
    try:
        own = json.loads(meta.get("quantflow", ""))
    except ValueError:
        own = None
    kept = all(meta.get(k) == v for k, v in (raw_header(source).get("__metadata__") or {}).items())
    check(f"{variant}: input metadata kept and 'quantflow' metadata is JSON", kept and isinstance(own, dict),
          f"metadata {sorted(meta)}")

    problems, formats = [], {}
    quantized = {n[:-len(".weight")] for n, t in out.items() if n.endswith(".weight") and t["dtype"] in ("F8_E4M3", "I8")}
    for layer in sorted(quantized):
        w = out[layer + ".weight"]
        if len(w["data"]) != math.prod(w["shape"]) or len(w["shape"]) != 2:
            problems.append(f"{layer}.weight {w['dtype']} {w['shape']} holds {len(w['data'])} bytes")
            continue
        m, n = w["shape"]
        scale = out.get(layer + (".weight_scale" if expect_format else ".scale_weight"))
        if scale is None or scale["dtype"] != "F32" or len(scale["data"]) != 4 * math.prod(scale["shape"]):
            problems.append(f"{layer}: missing or malformed scale")
            continue
        if expect_format is None:
            if layer + ".comfy_quant" in out:
                problems.append(f"{layer}: legacy file has a comfy_quant tensor")
            continue
        cq = out.get(layer + ".comfy_quant")
        try:
            text = bytes(cq["data"]).decode("utf-8")
            obj = json.loads(text)
            fmt = obj["format"]
        except (TypeError, ValueError, KeyError):
            problems.append(f"{layer}.comfy_quant is not JSON with a 'format' key")
            continue
        formats[fmt] = formats.get(fmt, 0) + 1
        if cq["dtype"] != "U8" or len(cq["shape"]) != 1 or text != json.dumps(obj):
            problems.append(f"{layer}.comfy_quant: {cq['dtype']} {cq['shape']} {text!r} is not U8 1-D json.dumps text")
        if fmt not in FORMATS:
            problems.append(f"{layer}: unknown format {fmt!r}")
            continue
        group = obj.get("group_size")
        if group is not None and obj.get("params", {}).get("group_size") != group:
            problems.append(f"{layer}: group_size {group} not repeated under params")
        wdtype, shapes = FORMATS[fmt]
        if w["dtype"] != wdtype or scale["shape"] not in shapes(m, n, group or 1):
            problems.append(f"{layer}: {fmt} with weight {w['dtype']} and scale {scale['shape']}")
        # SPEC section 3: INT8 block formats carry input_scale 1.0; --t5xxl FP8 copies the weight scale.
        want_input = (struct.pack("<f", 1.0) if fmt in ("int8_blockwise", "int8_lodewise")
                      else bytes(scale["data"]) if t5xxl and fmt == "float8_e4m3fn" else None)
        got_input = out.get(layer + ".input_scale")
        if want_input is not None and (got_input is None or got_input["dtype"] != "F32" or got_input["shape"] != [1]
                                       or bytes(got_input["data"]) != want_input):
            problems.append(f"{layer}: input_scale {got_input and (got_input['shape'], bytes(got_input['data']))}"
                            f" should be F32 [1] {want_input!r}")
    check(f"{variant}: {len(quantized)} quantized weights and their scales match their shapes and formats",
          quantized and not problems, "; ".join(problems[:5]) or "no quantized layer")
    if expect_format is not None:
        check(f"{variant}: comfy_quant formats {formats} include {expect_format!r}", formats.get(expect_format, 0) > 0)
    else:
        has_scale_input = any(n.endswith(".scale_input") for n in out)
        marker = out.get("scaled_fp8")
        want = [0] if has_scale_input else [2]
        check(f"{variant}: scaled_fp8 marker is F8_E4M3 {want}, zero-filled",
              marker is not None and marker["dtype"] == "F8_E4M3" and marker["shape"] == want
              and not any(bytes(marker["data"])), f"marker {marker and (marker['dtype'], marker['shape'])}")

    src = load(source)
    touched = {f"{l}.{s}" for l in quantized for s in ("weight", "bias")}
    changed = [n for n, t in out.items() if n in src and n not in touched and
               (t["dtype"], t["shape"], bytes(t["data"])) != (src[n]["dtype"], src[n]["shape"], bytes(src[n]["data"]))]
    check(f"{variant}: tensors not quantized are copied byte for byte", not changed, f"changed: {changed}")


def part_b(binary, fixtures, tmp):
    source = os.path.join(fixtures, "small_model.safetensors")
    for variant, (flags, expect_format) in VARIANTS.items():
        legacy = variant.startswith("legacy")
        args = [a for a in BASE if not (legacy and a == "--comfy_quant")] + (flags or [])
        path = os.path.join(tmp, f"small_{variant}.safetensors")
        if os.path.exists(path):
            os.remove(path)
        rc, _, err = run([binary, "convert", "-i", source, "-o", path] + args)
        if check(f"{variant}: convert {' '.join(args)} exits 0", rc == 0 and os.path.exists(path),
                 f"exit {rc}: {err.strip()[-300:]}"):
            check_output(variant, path, source, expect_format, "--t5xxl" in args)


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    binary, fixtures, tmp = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.makedirs(tmp, exist_ok=True)
    print(f"safetensors {safetensors.__version__}, quantflow {binary}")
    if not os.access(binary, os.X_OK):
        check("quantflow binary exists and is executable", False, binary)
    part_a(binary, tmp)
    part_b(binary, fixtures, tmp)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
