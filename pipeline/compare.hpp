// pipeline/compare.hpp: `quantflow compare ORIGINAL QUANTIZED`: per-layer quality of a quantized file.
//
// Every quantized layer of QUANTIZED (an F8_E4M3 or I8 `X.weight` with `X.weight_scale` in comfy_quant
// files or `X.scale_weight` in legacy ones, any scale grid: tensor, row, 1 x bs groups, bs x bs tiles) is
// dequantized and compared with `X.weight` of ORIGINAL:
//   relative error    ||W_hat - W|| / ||W||
//   projected error   ||U_k^T (W_hat - W) V_k^T|| / ||W||, U_k, V_k from an accurate SVD of W (8 power iterations)
//   output error      ||(W_hat X + b_hat) - (W X + b)|| / ||W X + b|| on seeded Gaussian inputs X
//   comfy             whether mainline ComfyUI loads the layer as written (notes/comfyui-loading.md)
// Files written by quantflow and by the reference tool are both understood.
//
// Memory: both files are memory-mapped and streamed layer by layer in ORIGINAL's file order; each layer's pages
// are dropped once it is measured (MappedFile::release), so resident memory is bounded by the memory budget and
// the largest layer, not by the model size. The metrics do not depend on that order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.hpp"

namespace quantflow {

struct CompareOptions {
    std::string original;
    std::string quantized;
    std::int64_t k = 16;       // singular components of the projected error
    int samples = 64;          // Gaussian test inputs of the output error
    std::uint64_t seed = 0;    // SVD sketch and test inputs
    // Host bytes of the layers in flight (the current one and those read ahead), estimated per layer as its
    // mapped weight and codes plus the working copies; a layer larger than the budget is measured alone.
    std::uint64_t memory_budget = 1ull << 30;
};

struct LayerComparison {
    std::string name;          // the weight tensor
    std::string format;        // comfy_quant format, or "legacy scale_weight"
    std::int64_t rows = 0, cols = 0, k = 0;
    std::string scale_shape;   // "[1]", "[3072, 1]", "[768, 4, 1]"
    double relative_error = 0, projected_error = 0, output_error = 0;
    bool comfy_loads = false;
    std::string comfy_note;    // why not (or a caveat)
};

struct Comparison {
    std::vector<LayerComparison> layers;  // name order
    std::size_t unquantized = 0;          // weights present in both files, not quantized in QUANTIZED
};

// Throws Error naming the file and tensor when a quantized layer has no counterpart of the same shape.
Comparison compare_files(const CompareOptions& options, Backend& backend);

std::string comparison_text(const Comparison& c, const CompareOptions& options);
std::string comparison_json(const Comparison& c, const CompareOptions& options);

}  // namespace quantflow
