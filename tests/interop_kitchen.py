#!/usr/bin/env python3
"""comfy-kitchen, ComfyUI's kernel library, reads what quantflow writes (ctest `interop_kitchen`).

usage: python3 interop_kitchen.py QUANTFLOW_BINARY TMP_DIR

Installs nothing: exits 77 (ctest: skipped) with a message when torch or comfy_kitchen cannot be imported
(tools/setup.sh installs them). Otherwise, on odd shapes too (M, K not multiples of 16/32/128):
(a) every layer quantflow writes as nvfp4, mxfp8 or float8_e5m2 (--simple) is decoded by comfy-kitchen's own
    functions (dequantize_nvfp4, dequantize_mxfp8, QuantizedTensor(...).dequantize(), on the CPU / eager backend)
    and must equal `quantflow decode` bit for bit;
(b) quantflow's round-to-nearest bytes (data, swizzled scales, nvfp4's weight_scale_2) must equal comfy-kitchen's
    eager quantizers' bytes on the same float32 weights (notes/comfyui-new-formats.md 9);
(c) ConvRot (int8_tensorwise + convrot, convrot_w4a4) at every group size that fits: comfy-kitchen's decoders equal
    `quantflow decode` to float32 rounding (both rotate back; comfy-kitchen in float32, quantflow in double), and
    its quantizers give quantflow's codes and scales except where its float32 rotation lands on the other side of
    a rounding boundary: scales within max(8, 2 sqrt(G)) ulp (a row's amax after G float32 additions in the BLAS's
    order: measured up to 6 with torch 2.9, 12 at G = 256 with torch 2.15), codes
    within 1 at positions an exact float64 rotation puts within 1e-3 of a half-step.
One line per check, then "N passed, M failed"; exit 1 when anything failed.
"""
import json
import os
import subprocess
import sys

try:
    import numpy as np
    import torch
    import comfy_kitchen as ck
    from comfy_kitchen.tensor import (QuantizedTensor, TensorCoreConvRotW4A4Layout, TensorCoreFP8Layout, TensorCoreMXFP8Layout,
                                      TensorCoreNVFP4Layout, TensorWiseINT8Layout)
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



def hadamard64(g):
    h4 = np.array([[1, 1, 1, -1], [1, 1, -1, 1], [1, -1, 1, 1], [-1, 1, 1, 1]], np.float64)
    h = h4
    while h.shape[0] < g:
        h = np.kron(h, h4)
    return h / np.sqrt(g)


def ulps_apart(a, b):
    a, b = a.contiguous().view(torch.int32).long(), b.contiguous().view(torch.int32).long()
    return (a - b).abs()


def check_convrot(flag, g, name, W, q, mine):
    layer = name[: -len(".weight")]
    n, k = W.shape
    data, scale, ours = q[name], q[layer + ".weight_scale"], mine[name]
    int4 = flag == "w4a4"
    tag = f"{flag} G={g} {layer} [{n}, {k}]"
    if int4:
        check(data.dtype == torch.int8 and list(data.shape) == [n, k // 2] and list(scale.shape) == [n], f"{tag}: I8 [N, K/2], scale [N]")
        full = ck.dequantize_convrot_w4a4_weight(data, scale, g, 64, torch.float32)
        params = TensorCoreConvRotW4A4Layout.Params(scale=scale, orig_dtype=torch.float32, orig_shape=(n, k), convrot_groupsize=g)
        via_layout = QuantizedTensor(data, "TensorCoreConvRotW4A4Layout", params).dequantize()
        ref_data, ref_scale = ck.quantize_convrot_w4a4_weight(W, g)
    else:
        check(data.dtype == torch.int8 and list(data.shape) == [n, k] and list(scale.shape) == [n, 1], f"{tag}: I8 [N, K], scale [N, 1]")
        full = torch.ops.comfy_kitchen.dequantize_int8_convrot_weight(data, scale, g)
        params = TensorWiseINT8Layout.Params(scale=scale, orig_dtype=torch.float32, orig_shape=(n, k), convrot=True, convrot_groupsize=g)
        via_layout = QuantizedTensor(data, "TensorWiseINT8Layout", params).dequantize()
        ref_data, ref = TensorWiseINT8Layout.quantize(W, is_weight=True, per_channel=True, convrot=True, convrot_groupsize=g)
        ref_scale = ref.scale
    top = ours.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
    for what, theirs in (("dequantize", full), ("QuantizedTensor.dequantize()", via_layout)):
        rel = float(((theirs - ours).abs() / top).max())
        check(theirs.shape == ours.shape and rel < 2e-6, f"{tag}: {what} == quantflow decode to float32 rounding (max {rel:.2g} of the row's amax)")
    scale_ulps = int(ulps_apart(ref_scale.reshape(-1).float(), scale.reshape(-1)).max())
    bound = max(8, int(2 * g ** 0.5))  # float32 sums of G terms: the error grows like sqrt(G) ulp
    check(scale_ulps <= bound, f"{tag}: scales == comfy-kitchen's to {scale_ulps} ulp (at most {bound}; {int((ulps_apart(ref_scale.reshape(-1).float(), scale.reshape(-1)) > 0).sum())} rows differ)")
    if int4:
        def unpack(t):
            b = t.view(torch.uint8).long()
            lo, hi = b & 15, b >> 4
            return torch.stack([lo, hi], dim=-1).reshape(t.shape[0], -1).apply_(lambda v: v - 16 if v > 7 else v)
        mine_codes, their_codes = unpack(data), unpack(ref_data)
    else:
        mine_codes, their_codes = data.long(), ref_data.long()
    differ = (mine_codes != their_codes)
    rot = W.double().numpy().reshape(n, k // g, g) @ hadamard64(g).T
    steps = rot.reshape(n, k) / scale.double().numpy().reshape(n, 1)
    near_tie = np.abs(np.abs(steps - np.floor(steps)) - 0.5) < 1e-3
    idx = differ.numpy()
    ok = bool(((mine_codes - their_codes).abs() <= 1).all()) and bool(near_tie[idx].all())
    check(ok, f"{tag}: codes == comfy-kitchen's but {int(idx.sum())} of {n * k}, each off by 1 at a half-step")


convrot_weights = {name: W for name, W in weights.items() if W.dtype == torch.float32}
convrot_weights["g.weight"] = torch.from_numpy(np.random.default_rng(5).standard_normal((96, 1024)).astype(np.float32) * 0.02)
src_rot = os.path.join(TMP, "kitchen_convrot_model.safetensors")
save_file(convrot_weights, src_rot)
for flag in ["convrot", "w4a4"]:
    for g in [4, 16, 64, 256]:
        out = os.path.join(TMP, f"kitchen_{flag}_{g}.safetensors")
        dec = os.path.join(TMP, f"kitchen_{flag}_{g}_decoded.safetensors")
        fmt = ["--int8", "--convrot"] if flag == "convrot" else ["--w4a4"]
        run("-i", src_rot, "-o", out, "--comfy_quant", "--simple", *fmt, "--convrot_group_size", str(g), "--progress", "none", "--overwrite")
        run("decode", out, "-o", dec, "--overwrite")
        q, mine = load_file(out), load_file(dec)
        for name, W in convrot_weights.items():
            k = W.shape[1]
            if k % g == 0 and (flag == "convrot" or k % 64 == 0):
                check_convrot(flag, g, name, W, q, mine)
            else:
                check(q[name].dtype == torch.int8 and list(q[name].shape) == list(W.shape) and
                      json.loads(bytes(q[name[:-7] + ".comfy_quant"].numpy())) == {"format": "int8_tensorwise"},
                      f"{flag} G={g} {name[:-7]} [{W.shape[0]}, {k}]: falls back to int8_tensorwise (unrotated)")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
