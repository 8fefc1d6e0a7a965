#!/usr/bin/env python3
"""comfy-kitchen, ComfyUI's kernel library, reads what quantflow writes (ctest `interop_kitchen`).

usage: python3 interop_kitchen.py QUANTFLOW_BINARY TMP_DIR

Installs nothing: exits 77 (ctest: skipped) with a message when torch or comfy_kitchen cannot be imported
(tools/setup.sh installs them). Otherwise, on odd shapes too (M, K not multiples of 16/32/128):
(a) every layer quantflow writes as nvfp4, mxfp8 or float8_e5m2 (--simple) is decoded by comfy-kitchen's own
    functions (dequantize_nvfp4, dequantize_mxfp8, QuantizedTensor(...).dequantize(), on the CPU / eager backend)
    and must equal `quantflow decode` bit for bit;
(b) quantflow's round-to-nearest bytes (data, swizzled scales, nvfp4's weight_scale_2) must equal comfy-kitchen's
    eager quantizers' bytes on the same float32 weights (notes/comfyui-new-formats.md 9).
One line per check, then "N passed, M failed"; exit 1 when anything failed.
"""
import os
import subprocess
import sys

try:
    import numpy as np
    import torch
    import comfy_kitchen as ck
    from comfy_kitchen.tensor import QuantizedTensor, TensorCoreFP8Layout, TensorCoreMXFP8Layout, TensorCoreNVFP4Layout
    from safetensors.torch import load_file, save_file
except Exception as e:  # noqa: BLE001 - any import failure means "not installed here"
    print(f"SKIP: comfy_kitchen/torch not importable ({type(e).__name__}: {e}); tools/setup.sh installs them")
    sys.exit(77)

QF, TMP = sys.argv[1], sys.argv[2]
os.makedirs(TMP, exist_ok=True)
passed = failed = 0


def check(ok, what):
    global passed, failed
    print(("ok   " if ok else "FAIL ") + what)
    passed += bool(ok)
    failed += not ok


def bits_equal(a, b):
    a, b = a.contiguous(), b.contiguous()
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def make_weights():
    rng = np.random.default_rng(11)
    w = {}
    for name, (m, k) in {"a": (200, 344), "b": (100, 70), "c": (256, 512), "d": (33, 48), "e": (130, 1000)}.items():
        w[name + ".weight"] = (rng.standard_normal((m, k)) * 0.05).astype(np.float32)
    # Rows spanning 12 orders of magnitude: zero, subnormal and saturated block scales.
    wide = rng.standard_normal((48, 160)).astype(np.float32)
    wide *= np.float32(10.0) ** rng.integers(-9, 3, size=(48, 1)).astype(np.float32)
    w["wide.weight"] = wide
    w["zero.weight"] = np.zeros((40, 40), np.float32)
    w["half_zero.weight"] = np.concatenate([np.zeros((20, 64), np.float32), rng.standard_normal((20, 64)).astype(np.float32)])
    w = {name: torch.from_numpy(v) for name, v in w.items()}
    # A BF16 checkpoint layer: comfy-kitchen quantizes the bf16 tensor itself (its amax and divisions in float32).
    w["bf16.weight"] = (torch.from_numpy(rng.standard_normal((72, 200)).astype(np.float32)) * 0.03).to(torch.bfloat16)
    return w


def run(*args):
    r = subprocess.run([QF, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"quantflow {' '.join(args)} failed: {r.stderr.strip()}")


weights = make_weights()
src = os.path.join(TMP, "kitchen_model.safetensors")
save_file(weights, src)
torch.manual_seed(0)

for flag in ["nvfp4", "mxfp8", "e5m2"]:
    out = os.path.join(TMP, f"kitchen_{flag}.safetensors")
    dec = os.path.join(TMP, f"kitchen_{flag}_decoded.safetensors")
    run("-i", src, "-o", out, "--comfy_quant", "--simple", f"--{flag}", "--progress", "none", "--overwrite")
    run("decode", out, "-o", dec, "--overwrite")
    q, mine = load_file(out), load_file(dec)
    for name, W in weights.items():
        layer = name[: -len(".weight")]
        n, k = W.shape
        data, scale = q[name], q[layer + ".weight_scale"]
        ours = mine[name]
        tag = f"{flag} {layer} [{n}, {k}]"
        if flag == "nvfp4":
            s2 = q[layer + ".weight_scale_2"]
            full = ck.dequantize_nvfp4(data, s2, scale.view(torch.float8_e4m3fn), torch.float32)
            check(bits_equal(full, ours), f"{tag}: dequantize_nvfp4 == quantflow decode (padded {list(ours.shape)})")
            params = TensorCoreNVFP4Layout.Params(scale=s2, orig_dtype=torch.float32, orig_shape=(n, k),
                                                  block_scale=scale.view(torch.float8_e4m3fn))
            cropped = QuantizedTensor(data, "TensorCoreNVFP4Layout", params).dequantize()
            check(bits_equal(cropped, ours[:n, :k]), f"{tag}: QuantizedTensor.dequantize() == quantflow decode [:N, :K]")
            amax = W.float().abs().amax()
            S = amax / (448.0 * 6.0) if amax > 0 else torch.tensor(1.0)
            check(bits_equal(S.reshape(()), s2.reshape(())), f"{tag}: weight_scale_2 == amax / 2688")
            if amax > 0:
                ref_data, ref_scale = ck.quantize_nvfp4(W, S, pad_16x=True)
                check(torch.equal(ref_data.view(torch.uint8), data.view(torch.uint8)), f"{tag}: data bytes == ck.quantize_nvfp4")
                check(torch.equal(ref_scale.view(torch.uint8).flatten(), scale.view(torch.uint8).flatten()) and
                      list(ref_scale.shape) == list(scale.shape), f"{tag}: swizzled scale bytes == ck.quantize_nvfp4")
        elif flag == "mxfp8":
            check(data.dtype == torch.float8_e4m3fn and scale.dtype == torch.uint8, f"{tag}: stored F8_E4M3 data, U8 scales")
            e8 = scale.view(torch.float8_e8m0fnu)
            full = ck.dequantize_mxfp8(data, e8, torch.float32)
            check(bits_equal(full, ours), f"{tag}: dequantize_mxfp8 == quantflow decode (padded {list(ours.shape)})")
            params = TensorCoreMXFP8Layout.Params(scale=e8, orig_dtype=torch.float32, orig_shape=(n, k))
            cropped = QuantizedTensor(data, "TensorCoreMXFP8Layout", params).dequantize()
            check(bits_equal(cropped, ours[:n, :k]), f"{tag}: QuantizedTensor.dequantize() == quantflow decode [:N, :K]")
            ref_data, ref_scale = ck.quantize_mxfp8(W, pad_32x=True)
            check(torch.equal(ref_data.view(torch.uint8), data.view(torch.uint8)), f"{tag}: data bytes == ck.quantize_mxfp8")
            check(torch.equal(ref_scale.view(torch.uint8).flatten(), scale.flatten()) and list(ref_scale.shape) == list(scale.shape),
                  f"{tag}: swizzled scale bytes == ck.quantize_mxfp8")
        else:
            check(data.dtype == torch.float8_e5m2, f"{tag}: stored F8_E5M2")
            params = TensorCoreFP8Layout.Params(scale=scale.reshape(()), orig_dtype=torch.float32, orig_shape=(n, k))
            got = QuantizedTensor(data, "TensorCoreFP8Layout", params).dequantize()
            check(bits_equal(got, ours), f"{tag}: QuantizedTensor.dequantize() == quantflow decode")
            # The codes are those of quantflow's e4m3 rule (x * 57344 / amax), which ck.quantize_per_tensor_fp8 with the
            # stored scale reproduces up to its division (x / scale): compare the decoded error instead of the bytes.
            err = (got - W.float()).norm() / max(W.float().norm(), 1e-30)
            check(err < 0.07, f"{tag}: relative error {float(err):.4f} < 7%")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
