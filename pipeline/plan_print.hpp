// pipeline/plan_print.hpp: `quantflow plan` output, as a table for people or JSON for scripts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/plan.hpp"

namespace quantflow {

// The effective settings printed with a plan ("memory_budget": "256 MiB (--memory-budget)", ...).
struct PlanSetting {
    std::string key;
    std::string value;
    std::string source;  // "default", "profile cpu", "command line"
};

struct PlanContext {
    std::string output_path;
    std::string device_line;
    std::string model_line;  // --model auto's verdict ("model: auto: wan (...): found ...")
    std::vector<PlanSetting> settings;
    std::uint64_t largest_job_bytes = 0;
    std::uint64_t memory_budget = 0;
    std::uint64_t gpu_memory_budget = 0;      // per device; 0: no accelerator
    std::size_t devices = 1;                  // devices the layers are spread over
    std::uint64_t largest_device_job_bytes = 0;
};

std::string plan_text(const Plan& plan, const PlanContext& ctx);
std::string plan_json(const Plan& plan, const PlanContext& ctx);

}  // namespace quantflow
