#include "kernels/units.hpp"
#include "pipeline/plan_print.hpp"

#include <cstdio>

#include "pipeline/profiles.hpp"
#include "stages/format/comfy_quant.hpp"
#include "stages/format/json_text.hpp"

namespace quantflow {
namespace {

std::string action_name(const LayerPlan& lp) {
    switch (lp.action) {
        case Action::Copy: return "keep";
        case Action::Remove: return "remove";
        case Action::CorrectBias: return "bias";
        case Action::Quantize: return std::string(format_label(lp.spec.format));
    }
    return "?";
}

std::string output_dtype(const Plan& plan, const LayerPlan& lp) {
    if (lp.action == Action::Remove) return "-";
    return std::string(dtype_name(plan.layout.tensors[lp.out_tensor].spec.dtype));
}

}  // namespace

std::string plan_text(const Plan& plan, const PlanContext& ctx) {
    std::string s;
    char line[512];
    s += "input:  " + plan.input.path + " (" + format_size(plan.input.file_size) + ", " +
         std::to_string(plan.input.tensors.size()) + " tensors)\n";
    s += "output: " + ctx.output_path + " (" + format_size(plan.layout.total_size) + ", " +
         std::to_string(plan.layout.tensors.size()) + " tensors)\n";
    s += ctx.device_line + "\n";
    if (!ctx.model_line.empty()) s += ctx.model_line + "\n";
    s += "format: " + std::string(format_label(plan.requested.format)) + " (" +
         std::string(comfy_format_name(plan.requested.format)) + "), block size " + std::to_string(plan.requested.block_size) + "\n";
    if (!plan.profile_names.empty()) {
        s += "model profiles:";
        for (const auto& p : plan.profile_names) s += " " + p;
        s += "\n";
    }
    s += "settings:\n";
    for (const auto& st : ctx.settings) {
        std::snprintf(line, sizeof line, "  %-18s %-14s (%s)\n", st.key.c_str(), st.value.c_str(), st.source.c_str());
        s += line;
    }
    s += "tensors in flight: at most " + format_size(std::max(ctx.memory_budget, ctx.largest_job_bytes)) + " (budget " +
         format_size(ctx.memory_budget) + ", largest single job " + format_size(ctx.largest_job_bytes) +
         "); input pages are released as they are written\n";
    if (ctx.gpu_memory_budget > 0)
        s += "GPU memory: at most " + format_size(std::max(ctx.gpu_memory_budget, ctx.largest_device_job_bytes)) +
             (ctx.devices > 1 ? " per device" : "") + " (budget " + format_size(ctx.gpu_memory_budget) + ", largest single job " +
             format_size(ctx.largest_device_job_bytes) + "), plus the staging ring in pinned host memory\n";
    if (ctx.devices > 1)
        s += "spread: each layer goes to the device with the most free GPU memory budget (" + std::to_string(ctx.devices) +
             " devices); the bytes do not depend on which device computed a layer\n";
    std::snprintf(line, sizeof line, "\n%-14s %-8s %-16s %-8s %s\n", "action", "dtype", "shape", "->", "tensor / reason");
    s += line;
    for (const auto& lp : plan.layers) {
        const TensorInfo& t = plan.input.tensors[lp.input];
        std::snprintf(line, sizeof line, "%-14s %-8s %-16s %-8s %s", action_name(lp).c_str(),
                      std::string(dtype_name(t.dtype)).c_str(), format_shape(t.shape).c_str(), output_dtype(plan, lp).c_str(),
                      t.name.c_str());
        s += line;
        if (!lp.reason.empty()) s += "  (" + lp.reason + ")";
        s += "\n";
    }
    const auto& c = plan.counts;
    s += "\nquantized " + std::to_string(c.quantized) + ", kept " + std::to_string(c.kept) + ", removed " +
         std::to_string(c.removed) + ", biases corrected " + std::to_string(c.biases_corrected) + "\n";
    for (const auto& note : plan.notes) s += "note: " + note + "\n";
    return s;
}

std::string plan_json(const Plan& plan, const PlanContext& ctx) {
    std::string s = "{\n  \"input\": " + json_quote(plan.input.path) + ",\n  \"input_bytes\": " + std::to_string(plan.input.file_size) +
                    ",\n  \"output\": " + json_quote(ctx.output_path) + ",\n  \"output_bytes\": " + std::to_string(plan.layout.total_size) +
                    ",\n  \"device\": " + json_quote(ctx.device_line) + ",\n  \"model\": " + json_quote(ctx.model_line) + ",\n  \"format\": " +
                    json_quote(comfy_format_name(plan.requested.format)) + ",\n  \"block_size\": " + std::to_string(plan.requested.block_size) +
                    ",\n  \"memory_budget\": " + std::to_string(ctx.memory_budget) + ",\n  \"largest_job_bytes\": " +
                    std::to_string(ctx.largest_job_bytes) + ",\n  \"gpu_memory_budget\": " + std::to_string(ctx.gpu_memory_budget) +
                    ",\n  \"largest_device_job_bytes\": " + std::to_string(ctx.largest_device_job_bytes) + ",\n  \"devices\": " +
                    std::to_string(ctx.devices) + ",\n  \"settings\": {";
    for (std::size_t i = 0; i < ctx.settings.size(); ++i)
        s += std::string(i ? ", " : "") + json_quote(ctx.settings[i].key) + ": {\"value\": " + json_quote(ctx.settings[i].value) +
             ", \"source\": " + json_quote(ctx.settings[i].source) + "}";
    s += "},\n  \"profiles\": [";
    for (std::size_t i = 0; i < plan.profile_names.size(); ++i) s += (i ? ", " : "") + json_quote(plan.profile_names[i]);
    s += "],\n  \"tensors\": [\n";
    for (std::size_t i = 0; i < plan.layers.size(); ++i) {
        const auto& lp = plan.layers[i];
        const TensorInfo& t = plan.input.tensors[lp.input];
        s += "    {\"name\": " + json_quote(t.name) + ", \"dtype\": \"" + std::string(dtype_name(t.dtype)) + "\", \"shape\": " +
             format_shape(t.shape) + ", \"action\": " + json_quote(action_name(lp)) + ", \"output_dtype\": " +
             json_quote(output_dtype(plan, lp));
        if (lp.action == Action::Quantize)
            s += ", \"comfy_format\": " + json_quote(comfy_format_name(lp.spec.format)) +
                 ", \"full_precision_matrix_mult\": " + (lp.full_precision_mm ? "true" : "false");
        s += ", \"reason\": " + json_quote(lp.reason) + "}" + (i + 1 < plan.layers.size() ? ",\n" : "\n");
    }
    const auto& c = plan.counts;
    s += "  ],\n  \"counts\": {\"quantized\": " + std::to_string(c.quantized) + ", \"kept\": " + std::to_string(c.kept) +
         ", \"removed\": " + std::to_string(c.removed) + ", \"biases_corrected\": " + std::to_string(c.biases_corrected) +
         ", \"fallbacks\": " + std::to_string(c.fallbacks) + "},\n  \"notes\": [";
    for (std::size_t i = 0; i < plan.notes.size(); ++i) s += (i ? ", " : "") + json_quote(plan.notes[i]);
    return s + "]\n}\n";
}

}  // namespace quantflow
