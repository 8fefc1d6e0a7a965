// stages/messages.hpp: the plain structs that travel on the edges of the conversion graph.
//
// pipeline/plan.cpp fills one LayerPlan per input tensor before any compute (decisions and output slots);
// the reader turns them into TensorJobs; each stage fills its part of a job and passes it on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/backend.hpp"
#include "kernels/quant_types.hpp"
#include "kernels/rounding.hpp"
#include "stages/format/stored_layer.hpp"

namespace quantflow {

inline constexpr std::size_t kNoTensor = static_cast<std::size_t>(-1);

enum class Action : std::uint8_t {
    Copy,        // written byte for byte (pass-through, filtered or non-weight tensors)
    Remove,      // dropped from the output
    Quantize,    // a 2-D weight quantized to `spec`
    CorrectBias  // the bias of a quantized layer: rewritten by that layer's job, never a job of its own
};

struct LayerPlan {
    std::size_t input = 0;  // index into the input header's tensors (file order)
    Action action = Action::Copy;
    std::string reason;     // why (filter verdict, fallback, ...), for `plan` and reports

    // Quantize only.
    QuantSpec spec;
    bool full_precision_mm = false;        // written into comfy_quant
    std::int64_t rank_k = 0;               // learned rounding: singular components (0 = round-to-nearest)
    double finish_budget = 1e-4;           // the rounding-aware finish's Frobenius budget (share; 1e-4 = +0.01%)
    bool search_scales = false;            // learned rounding starts from Backend::search_block_scales (nvfp4)
    std::uint64_t work_bytes = 0;          // working memory in host RAM, counted by the memory budget
    std::uint64_t device_bytes = 0;        // accelerator memory while in flight, counted by the GPU memory budget
    std::size_t bias_input = kNoTensor;    // input index of the layer's bias when it is corrected
    std::size_t out_scale = kNoTensor;     // output index of the scale tensor
    std::size_t out_scale_2 = kNoTensor;   // nvfp4: output index of weight_scale_2 (the global scale)
    std::size_t out_input_scale = kNoTensor;  // output index of an input_scale copied from the weight scale
    std::size_t out_bias = kNoTensor;      // output index of the corrected bias

    // Quantize a layer already quantized in the input (stages/format/stored_layer.hpp): decoded to float32 and
    // re-encoded, or with keep_codes (--convert_fp8_scaled / --convert_int8_scaled) written with its own codes and
    // scales in the output's layout.
    std::optional<StoredLayer> stored;
    bool keep_codes = false;

    // Copy: the output tensor; Quantize: the quantized weight.
    std::size_t out_tensor = kNoTensor;
};

// One unit of work: a whole quantized layer, or a chunk of a copied tensor.
// Something a job holds until it is done with it, given back when dropped (also when a failed graph drops
// the jobs still queued): the pipeline's share of a device's budget.
class JobLease {
public:
    virtual ~JobLease() = default;
};

struct TensorJob {
    const LayerPlan* plan = nullptr;
    std::uint64_t chunk_begin = 0;  // Copy: byte range inside the tensor's data
    std::uint64_t chunk_end = 0;
    std::uint64_t budget_bytes = 0;  // what this job holds in memory while in flight
    std::uint64_t device_bytes = 0;  // what it holds in accelerator memory (from the optimizer to the bias corrector)
    std::size_t device = 0;          // the device (of the run's pool) that computes this job
    std::unique_ptr<JobLease> device_lease;  // device_bytes charged to that device, until the bias corrector is done
    std::unique_ptr<WeightHold> held;  // the weight kept on the accelerator for those stages

    std::vector<float> work;         // the float32 weight every stage works on when it is not the file's: a stored layer
                                     // decoded, and/or ConvRot-rotated (optimizer to bias corrector)
    QuantizedTensor quant;           // filled by the optimizer stage
    LowRank basis;                   // learned rounding's top-k basis (k = 0 without one)
    RoundingStats rounding;          // learned rounding's record (rank_k > 0)
    QualityMetrics quality;          // filled when a report asks for per-layer quality
    bool measured = false;
    double seconds = 0;              // optimizer wall time for this layer
    std::vector<std::byte> bias;     // filled by the bias corrector (bias dtype, RNE)
};

using JobPtr = std::shared_ptr<TensorJob>;

}  // namespace quantflow
