#include "pipeline/detect.hpp"

#include <algorithm>

#include "pipeline/profiles.hpp"

namespace quantflow {
namespace {

const TensorInfo* first_containing(const std::vector<TensorInfo>& tensors, const std::string& part) {
    for (const auto& t : tensors)
        if (t.name.find(part) != std::string::npos) return &t;
    return nullptr;
}

// Whether the profile's rules hold; `evidence` lists what was found.
bool matches(const ModelProfile& p, const std::vector<TensorInfo>& tensors, std::string& evidence) {
    std::vector<std::string> found;
    for (const auto& part : p.detect_all) {
        const TensorInfo* t = first_containing(tensors, part);
        if (!t) return false;
        found.push_back(t->name);
    }
    if (!p.detect_any.empty()) {
        const auto it = std::find_if(p.detect_any.begin(), p.detect_any.end(),
                                     [&](const std::string& part) { return first_containing(tensors, part) != nullptr; });
        if (it == p.detect_any.end()) return false;
        found.push_back(first_containing(tensors, *it)->name);
    }
    for (const auto& part : p.detect_none)
        if (first_containing(tensors, part)) return false;
    for (const auto& [part, rank] : p.detect_rank) {
        const TensorInfo* t = first_containing(tensors, part);
        if (!t || static_cast<int>(t->shape.size()) != rank) return false;
    }
    evidence.clear();
    for (std::size_t i = 0; i < found.size(); ++i) evidence += (i ? ", " : "") + found[i];
    return true;
}

}  // namespace

Detection detect_architecture(const std::vector<TensorInfo>& tensors, const std::vector<ModelProfile>& candidates) {
    Detection d;
    std::vector<const ModelProfile*> sorted;
    for (const auto& p : candidates)
        if (p.detectable()) sorted.push_back(&p);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
    for (const ModelProfile* p : sorted) {
        std::string evidence;
        if (!matches(*p, tensors, evidence)) continue;
        d.profiles.push_back(p->name);
        d.summary += std::string(d.summary.empty() ? "" : "; ") + p->name + " (" + p->description + "): found " + evidence;
    }
    if (d.profiles.empty()) d.summary = "unknown architecture: no model profile's detect rules match, no model filter applied";
    return d;
}

Detection detect_architecture(const std::vector<TensorInfo>& tensors) {
    std::vector<ModelProfile> all;
    for (const auto& name : model_profile_names()) all.push_back(load_model_profile(name));
    return detect_architecture(tensors, all);
}

}  // namespace quantflow
