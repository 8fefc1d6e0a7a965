// pipeline/convert.hpp: one conversion, from options to a committed output file; shared by `convert`,
// `plan` and every file of `batch`.
//
// prepare_conversion() makes every decision (seed, output name, hardware settings, architecture detection
// for --model auto, the plan) and touches nothing on disk; execute_conversion() runs the graph into a temp
// file and commits it. Library code: no printing; what a user should read comes back in `messages`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.hpp"
#include "pipeline/devices.hpp"
#include "pipeline/graph.hpp"
#include "pipeline/options.hpp"
#include "pipeline/plan.hpp"
#include "pipeline/plan_print.hpp"
#include "pipeline/profiles.hpp"
#include "pipeline/progress.hpp"

namespace quantflow {

struct Prepared {
    Options options;                   // as resolved: seed drawn, detected model profiles added
    HardwareProfile hardware;
    PlanContext context;               // output path, device line, effective settings and their sources
    RunSettings run;
    std::shared_ptr<DevicePool> devices;  // one backend per device; shared by the files of a batch
    Plan plan;
    std::vector<std::string> messages;  // "seed: ...", "model: auto detected ...": for the log
};

// Throws Error(kUsage) for bad option values, Error for a bad input file. `devices` may be shared by several
// conversions (batch: their layers then share each device's budget, set by the first); null = make them
// from --devices, --device or the hardware profile's "devices". tensors_in_flight scales with the devices.
Prepared prepare_conversion(Options options, std::shared_ptr<DevicePool> devices = nullptr);

// The devices and the hardware profile of a run: devices from --devices, else --device, else a named
// profile's "devices" (`devices` given: those); the profile from --profile, else picked by the first
// device's memory ("cpu", "gpu-8gb", "gpu-24gb", "gpu-80gb").
struct Hardware {
    std::shared_ptr<DevicePool> devices;
    HardwareProfile profile;
    std::string device_line;     // "devices: cuda:0 (...), cuda:1 (...)"
    std::string profile_source;  // "profile gpu-80gb (picked for 139 GiB of GPU memory)"
};
Hardware choose_hardware(const Options& options, std::shared_ptr<DevicePool> devices = nullptr);

// A batch converts the profile's concurrent_files per device at the same time.
int effective_concurrent_files(const HardwareProfile& hardware, std::size_t devices);

// Converts into a temp file next to the output and renames it into place. Throws Error (the temp file is
// gone by then); Interrupted after SIGINT/SIGTERM.
RunStats execute_conversion(const Prepared& p, Progress& progress);

// The per-file report object of `--report` (spec issue 5): status, error, seconds, bytes, counts, peak RSS,
// device, effective settings, and one quality line per quantized layer.
std::string conversion_report_json(const Prepared& p, const RunStats& stats, const std::string& status,
                                   const std::string& error, long peak_rss_bytes);

// Peak resident memory of this process since the last reset_peak_rss() (VmHWM), in bytes.
long peak_rss_bytes();
// Resets the peak (Linux /proc/self/clear_refs), so each file of a batch gets its own figure.
void reset_peak_rss();

}  // namespace quantflow
