#include "pipeline/profiles.hpp"

#include "kernels/units.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "kernels/backend.hpp"
#include "kernels/error.hpp"
#include "pipeline/embedded_profiles.hpp"

namespace quantflow {
namespace {

// A profile names the user's own configuration, so every problem with one is a usage error.
[[noreturn]] void fail(const std::string& message) { throw Error(message, ExitCode::kUsage); }

struct ProfileText {
    std::string label;  // how messages name the file: "profiles/models/wan.json" or the path as given
    std::string text;
};

bool is_path(std::string_view name_or_path) {
    return name_or_path.find('/') != std::string_view::npos || name_or_path.ends_with(".json");
}

std::vector<std::string> embedded_names(std::string_view folder) {
    const std::string prefix = std::string(folder) + "/";
    std::vector<std::string> names;
    for (std::size_t i = 0; i < kEmbeddedProfileCount; ++i) {
        const std::string_view path = kEmbeddedProfiles[i].path;
        if (path.starts_with(prefix) && path.ends_with(".json"))
            names.emplace_back(path.substr(prefix.size(), path.size() - prefix.size() - 5));
    }
    std::sort(names.begin(), names.end());
    return names;
}

// folder is "models" or "hardware": the subdirectory of profiles/ and the word used in messages.
ProfileText profile_text(std::string_view folder, std::string_view name_or_path) {
    const std::string kind = folder == "models" ? "model" : "hardware";
    if (is_path(name_or_path)) {
        const std::string path(name_or_path);
        std::ifstream in(path, std::ios::binary);
        if (!in) fail(path + ": cannot open " + kind + " profile: " + std::strerror(errno));
        std::ostringstream text;
        text << in.rdbuf();
        // A directory opens on Linux but fails on the first read.
        if (in.bad() || text.fail()) fail(path + ": cannot read " + kind + " profile");
        return {path, text.str()};
    }
    const std::string path = std::string(folder) + "/" + std::string(name_or_path) + ".json";
    for (std::size_t i = 0; i < kEmbeddedProfileCount; ++i)
        if (path == kEmbeddedProfiles[i].path) return {"profiles/" + path, kEmbeddedProfiles[i].text};
    std::string available;
    for (const auto& name : embedded_names(folder)) available += (available.empty() ? "" : ", ") + name;
    fail("unknown " + kind + " profile '" + std::string(name_or_path) + "' (available: " + available +
         "; or give a path to a .json file)");
}

// Reads the fields of one JSON object, naming the file and the field in every error.
class FieldReader {
public:
    FieldReader(const ProfileText& file, simdjson::dom::parser& parser) : label_(file.label) {
        simdjson::dom::element doc;
        if (auto err = parser.parse(file.text.data(), file.text.size()).get(doc))
            fail(label_ + ": invalid JSON: " + simdjson::error_message(err));
        if (doc.get_object().get(root_)) fail(label_ + ": the top level must be a JSON object");
    }

    // Every key must be one of `known`; listing them turns a typo into a one-line fix.
    void check_keys(const simdjson::dom::object& object, const std::vector<std::string_view>& known,
                    std::string_view prefix = "") const {
        std::set<std::string_view> seen;
        for (const auto& field : object) {
            const std::string_view key = field.key;
            const std::string full = std::string(prefix) + std::string(key);
            if (std::find(known.begin(), known.end(), key) == known.end()) {
                std::string list;
                for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
                fail(label_ + ": unknown key '" + full + "' (expected one of: " + list + ")");
            }
            if (!seen.insert(key).second) fail(label_ + ": duplicate key '" + full + "'");
        }
    }

    const simdjson::dom::object& root() const { return root_; }
    const std::string& label() const { return label_; }

    std::optional<simdjson::dom::element> find(const simdjson::dom::object& object, std::string_view key) const {
        simdjson::dom::element value;
        if (object.at_key(key).get(value)) return std::nullopt;
        return value;
    }

    std::string string(std::string_view key, bool required, std::string fallback = {}) const {
        const auto value = find(root_, key);
        if (!value) {
            if (required) fail(label_ + ": missing field '" + std::string(key) + "'");
            return fallback;
        }
        std::string_view text;
        if (value->get_string().get(text)) fail(label_ + ": field '" + std::string(key) + "' must be a string");
        return std::string(text);
    }

    // An empty entry would be a substring of every key and skip or remove the whole model.
    std::vector<std::string> string_list(const simdjson::dom::object& object, std::string_view key,
                                         std::string_view shown) const {
        std::vector<std::string> out;
        const auto value = find(object, key);
        if (!value) return out;
        simdjson::dom::array array;
        const std::string bad = label_ + ": field '" + std::string(shown) + "' must be an array of strings";
        if (value->get_array().get(array)) fail(bad);
        for (auto item : array) {
            std::string_view text;
            if (item.get_string().get(text)) fail(bad);
            if (text.empty())
                fail(label_ + ": field '" + std::string(shown) + "' has an empty string, which matches every key");
            out.emplace_back(text);
        }
        return out;
    }

    bool boolean(std::string_view key, bool fallback) const {
        const auto value = find(root_, key);
        if (!value) return fallback;
        bool flag = false;
        if (value->get_bool().get(flag)) fail(label_ + ": field '" + std::string(key) + "' must be true or false");
        return flag;
    }

    int integer(std::string_view key, int fallback, int min, int max) const {
        const auto value = find(root_, key);
        if (!value) return fallback;
        std::int64_t number = 0;
        if (value->get_int64().get(number) || number < min || number > max)
            fail(label_ + ": field '" + std::string(key) + "' must be an integer from " + std::to_string(min) + " to " +
                 std::to_string(max));
        return static_cast<int>(number);
    }

    // Sizes are strings with units ("6GiB"); a plain integer byte count is accepted too.
    std::uint64_t size(std::string_view key, std::uint64_t fallback, std::uint64_t min) const {
        const auto value = find(root_, key);
        if (!value) return fallback;
        const std::string what = label_ + ": field '" + std::string(key) + "'";
        std::uint64_t bytes = 0;
        std::string_view text;
        if (!value->get_string().get(text)) {
            bytes = parse_size(text, what);
        } else if (value->get_uint64().get(bytes)) {
            fail(what + " must be a size such as \"256MiB\" or a byte count");
        }
        if (bytes < min) fail(what + " must be at least " + format_size(min));
        return bytes;
    }

private:
    std::string label_;
    simdjson::dom::object root_;
};

bool is_device(std::string_view device) {
    if (device == "auto" || device == "cpu" || device == "cuda") return true;
    if (!device.starts_with("cuda:") || device.size() == 5) return false;
    return std::all_of(device.begin() + 5, device.end(), [](char c) { return c >= '0' && c <= '9'; });
}

struct Unit {
    std::string_view suffix;
    std::uint64_t bytes;
};

// Longest suffixes first, so "MiB" is not read as "B".
// clang-format off
constexpr Unit kUnits[] = {
    {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
    {"KB", 1000ull},     {"MB", 1000000ull},  {"GB", 1000000000ull}, {"TB", 1000000000000ull},
    {"B", 1ull},
};
// clang-format on

}  // namespace

ModelProfile load_model_profile(std::string_view name_or_path) {
    const ProfileText file = profile_text("models", name_or_path);
    simdjson::dom::parser parser;
    const FieldReader reader(file, parser);
    reader.check_keys(reader.root(), {"name", "description", "detect", "skip", "remove", "input_scale_from_weight", "layer_configs"});
    if (const auto configs = reader.find(reader.root(), "layer_configs")) {
        simdjson::dom::object object;
        if (configs->get_object().get(object)) fail(file.label + ": field 'layer_configs' must be an object of name: layer config");
    }

    ModelProfile profile;
    profile.name = reader.string("name", true);
    if (profile.name.empty()) fail(file.label + ": field 'name' must not be empty");
    profile.description = reader.string("description", false);
    if (!reader.find(reader.root(), "skip")) fail(file.label + ": missing field 'skip'");
    profile.skip = reader.string_list(reader.root(), "skip", "skip");
    profile.remove = reader.string_list(reader.root(), "remove", "remove");
    profile.input_scale_from_weight = reader.boolean("input_scale_from_weight", false);
    if (const auto detect = reader.find(reader.root(), "detect")) {
        simdjson::dom::object object;
        if (detect->get_object().get(object)) fail(file.label + ": field 'detect' must be an object");
        reader.check_keys(object, {"all", "any", "none", "rank"}, "detect.");
        profile.detect_all = reader.string_list(object, "all", "detect.all");
        profile.detect_any = reader.string_list(object, "any", "detect.any");
        profile.detect_none = reader.string_list(object, "none", "detect.none");
        if (const auto rank = reader.find(object, "rank")) {
            simdjson::dom::object ranks;
            if (rank->get_object().get(ranks)) fail(file.label + ": field 'detect.rank' must be an object of name: rank");
            for (const auto field : ranks) {
                std::int64_t r = 0;
                if (field.value.get_int64().get(r) || r < 0 || r > 8)
                    fail(file.label + ": field 'detect.rank." + std::string(field.key) + "' must be an integer 0..8");
                profile.detect_rank.emplace_back(std::string(field.key), static_cast<int>(r));
            }
        }
        if (!profile.detectable()) fail(file.label + ": field 'detect' needs a non-empty 'all' or 'any' list");
    }
    return profile;
}

std::string profile_layer_config(std::string_view profile, std::string_view name, std::string& label) {
    const ProfileText file = profile_text("models", profile);
    simdjson::dom::parser parser;
    const FieldReader reader(file, parser);
    std::string names;
    if (const auto configs = reader.find(reader.root(), "layer_configs")) {
        simdjson::dom::object object;
        if (configs->get_object().get(object) == simdjson::SUCCESS)
            for (const auto field : object) {
                if (field.key == name) {
                    label = file.label + " layer_configs." + std::string(name);
                    return simdjson::to_string(field.value);
                }
                names += (names.empty() ? "" : ", ") + std::string(field.key);
            }
    }
    throw Error("--layer-config " + std::string(profile) + ":" + std::string(name) + ": " + file.label + " has no layer config '" +
                    std::string(name) + "' (" + (names.empty() ? std::string("it has none") : "it has " + names) + ")",
                ExitCode::kUsage);
}

std::string default_hardware_profile(std::uint64_t device_memory) {
    const std::uint64_t gib = device_memory >> 30;
    return gib >= 70 ? "gpu-80gb" : gib >= 20 ? "gpu-24gb" : gib >= 7 ? "gpu-8gb" : "cpu";
}

HardwareProfile load_hardware_profile(std::string_view name_or_path) {
    const ProfileText file = profile_text("hardware", name_or_path);
    simdjson::dom::parser parser;
    const FieldReader reader(file, parser);
    reader.check_keys(reader.root(),
                      {"name", "device", "devices", "memory_budget", "gpu_memory_budget", "tensors_in_flight", "cpu_threads", "gpu_streams",
                       "pinned_slab", "pinned_slabs", "reader_chunk", "concurrent_files"});

    const HardwareProfile defaults;
    HardwareProfile hw;
    hw.name = reader.string("name", true);
    if (hw.name.empty()) fail(file.label + ": field 'name' must not be empty");
    hw.device = reader.string("device", false, defaults.device);
    if (!is_device(hw.device))
        fail(file.label + ": field 'device' must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", not \"" + hw.device +
             "\"");
    hw.devices = reader.string("devices", false, defaults.devices);
    if (!hw.devices.empty()) {
        try {
            parse_device_list(hw.devices);
        } catch (const Error&) {
            fail(file.label + ": field 'devices' must be \"all\" or GPU indices such as \"0,1\", not \"" + hw.devices + "\"");
        }
    }
    // The upper bounds only catch typos (an extra zero or two); no real machine comes near them.
    hw.memory_budget = reader.size("memory_budget", defaults.memory_budget, 1);
    hw.gpu_memory_budget = reader.size("gpu_memory_budget", defaults.gpu_memory_budget, 0);
    hw.tensors_in_flight = reader.integer("tensors_in_flight", defaults.tensors_in_flight, 1, 1024);
    hw.cpu_threads = reader.integer("cpu_threads", defaults.cpu_threads, 0, 4096);
    hw.gpu_streams = reader.integer("gpu_streams", defaults.gpu_streams, 0, 64);
    hw.pinned_slab = reader.size("pinned_slab", defaults.pinned_slab, 0);
    hw.pinned_slabs = reader.integer("pinned_slabs", defaults.pinned_slabs, 0, 1024);
    hw.reader_chunk = reader.size("reader_chunk", defaults.reader_chunk, 1);
    hw.concurrent_files = reader.integer("concurrent_files", defaults.concurrent_files, 1, 256);
    return hw;
}

std::vector<std::string> model_profile_names() { return embedded_names("models"); }
std::vector<std::string> hardware_profile_names() { return embedded_names("hardware"); }

std::uint64_t parse_size(std::string_view text, std::string_view what) {
    const auto bad = [&](std::string_view why) {
        fail(std::string(what) + ": invalid size '" + std::string(text) + "' (" + std::string(why) + ")");
    };
    const std::size_t digits_end = text.find_first_not_of("0123456789.");
    const std::string_view number = text.substr(0, digits_end);
    std::string_view unit = digits_end == std::string_view::npos ? std::string_view{} : text.substr(digits_end);
    if (unit.size() > 1 && unit.front() == ' ') unit.remove_prefix(1);  // "256 MiB", as format_size prints it
    if (number.empty() || number.front() == '.' || number.back() == '.' ||
        std::count(number.begin(), number.end(), '.') > 1)
        bad("expected bytes or a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 6GiB");

    std::uint64_t multiplier = 1;
    if (!unit.empty()) {
        const auto it =
            std::find_if(std::begin(kUnits), std::end(kUnits), [&](const Unit& u) { return u.suffix == unit; });
        if (it == std::end(kUnits))
            bad("unknown unit '" + std::string(unit) + "'; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB");
        multiplier = it->bytes;
    }
    const std::size_t dot = number.find('.');
    const std::string_view whole = number.substr(0, dot);
    std::uint64_t integer = 0;
    if (std::from_chars(whole.data(), whole.data() + whole.size(), integer).ec != std::errc{}) bad("too large");
    constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
    if (integer > kMax / multiplier) bad("too large");
    std::uint64_t bytes = integer * multiplier;
    if (dot != std::string_view::npos) {
        if (unit.empty() || multiplier == 1) bad("a byte count must be a whole number");
        // The fraction times the unit is below 2^40, so a long double holds it exactly enough to round.
        const long double fraction = std::stold("0" + std::string(number.substr(dot)));
        const auto extra = static_cast<std::uint64_t>(std::llround(fraction * static_cast<long double>(multiplier)));
        if (extra > kMax - bytes) bad("too large");
        bytes += extra;
    }
    return bytes;
}

}  // namespace quantflow
