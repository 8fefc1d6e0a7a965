// pipeline/profiles.hpp: model filter profiles and hardware profiles, read from JSON with simdjson.
//
// The shipped profiles (profiles/models/*.json, profiles/hardware/*.json) are compiled into the binary,
// so a bundled quantflow needs no data directory; a user's own file is given by path (anything containing
// '/' or ending in ".json"). Unknown keys, wrong types and bad sizes throw Error naming the file and key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/units.hpp"
#include "stages/filter.hpp"

namespace quantflow {

struct HardwareProfile {
    std::string name;
    std::string device = "auto";            // "cpu", "cuda", "auto"
    std::string devices;                    // "all" or "0,1": the GPUs a run uses when --device/--devices are not given
    std::uint64_t memory_budget = 1ull << 30;  // host bytes of tensors in flight (input pages + work + output)
    std::uint64_t gpu_memory_budget = 0;       // accelerator bytes of the jobs in flight (0: half the GPU's memory)
    int tensors_in_flight = 4;              // concurrency of the compute stage, per device
    int cpu_threads = 0;                    // 0 = all cores
    int gpu_streams = 2;
    std::uint64_t pinned_slab = 256ull << 20;
    int pinned_slabs = 4;
    std::uint64_t reader_chunk = 64ull << 20;  // pass-through tensors are copied in chunks of this size
    int concurrent_files = 1;               // batch mode, per device
};

// By name ("wan") from the embedded set, or from a path.
// A layer config a model profile carries ("layer_configs": {"NAME": {regex: settings}}) as JSON text; label
// receives how messages name it ("profiles/models/wan.json layer_configs.NAME"). Error (kUsage) listing the
// profile's configs when it has no NAME.
std::string profile_layer_config(std::string_view profile, std::string_view name, std::string& label);

ModelProfile load_model_profile(std::string_view name_or_path);
HardwareProfile load_hardware_profile(std::string_view name_or_path);
// The hardware profile used without --profile: "cpu" without an accelerator, else the gpu-* profile whose
// size fits `device_memory` bytes.
std::string default_hardware_profile(std::uint64_t device_memory);
// Names of the embedded profiles, sorted.
std::vector<std::string> model_profile_names();
std::vector<std::string> hardware_profile_names();

// "256MiB", "6GiB", "1.5GB", "4096", "64KiB" -> bytes. Throws Error naming `what` on a bad size.
std::uint64_t parse_size(std::string_view text, std::string_view what);

}  // namespace quantflow
