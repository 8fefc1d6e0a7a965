// pipeline/graph.hpp: runs a planned conversion as a oneTBB flow graph (spec section 6).
//
//   reader thread --(byte budget)--> quantize (N) --> correct bias (N) --> write (N) --> release + progress
//
// The reader is a plain thread that blocks on the byte budget (never a TBB worker: with one thread that
// would deadlock); every stage forwards exactly one message per job, so the budget always drains. An
// exception in any body cancels the graph, wakes the reader and is rethrown here; the caller's OutputFile
// then removes its temp file. The caller's cancel flag (set by a signal handler, say) stops the reader and
// makes the next body throw Interrupted.
//
// Devices (issue 13): the reader charges each layer to a device of the pool (pipeline/devices.hpp), whose
// backend then runs the layer's every stage; a layer's error names its tensor and its device.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.hpp"
#include "pipeline/devices.hpp"
#include "pipeline/plan.hpp"
#include "pipeline/progress.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/output_file.hpp"
#include "stages/optimizer.hpp"

namespace quantflow {

// Stops a run from outside (a signal handler, another thread): owned by the caller, one per run or batch.
using CancelFlag = std::atomic<bool>;

struct RunSettings {
    int concurrency = 2;                   // jobs computed at once (profile tensors_in_flight x devices)
    std::uint64_t memory_budget = 1ull << 30;
    std::uint64_t gpu_memory_budget = 0;   // per device: accelerator bytes of the jobs in flight (0: none)
    std::uint64_t reader_chunk = 64ull << 20;
    std::uint64_t seed = 0;
    int calib_samples = 3072;
    OptimizerSettings optimizer;   // learned rounding (layers planned with rank_k > 0)
    int quality_samples = 0;       // > 0: measure every quantized layer (for --report) on this many inputs
    const CancelFlag* cancel = nullptr;  // set: the run stops with Interrupted (null: never cancelled)
};

// What happened to one quantized layer, for --report.
struct LayerRecord {
    std::string name;
    QuantSpec spec;
    std::int64_t rows = 0, cols = 0;
    double seconds = 0;
    std::string device;       // the device that computed it ("cuda:1")
    RoundingStats rounding;   // rounding.k == 0: round-to-nearest
    bool measured = false;
    QualityMetrics quality;
};

struct RunStats {
    double seconds = 0;
    std::uint64_t peak_in_flight = 0;  // bytes, as counted by the budget
    std::size_t jobs = 0;
    std::vector<LayerRecord> layers;  // quantized layers in completion order
};

// Writes the header, constants and every job's output into `out` (not committed: the caller commits), each
// layer computed on one device of the pool (whose budget must be set).
RunStats run_conversion(const Plan& plan, const MappedFile& input, OutputFile& out, DevicePool& devices,
                        const RunSettings& settings, Progress& progress);
// The same on one backend, with settings.gpu_memory_budget as its budget.
RunStats run_conversion(const Plan& plan, const MappedFile& input, OutputFile& out, Backend& backend,
                        const RunSettings& settings, Progress& progress);

inline bool cancelled(const RunSettings& settings) { return settings.cancel && settings.cancel->load(); }

}  // namespace quantflow
