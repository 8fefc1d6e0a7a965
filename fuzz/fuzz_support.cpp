#include "fuzz/fuzz_support.hpp"

#include <unistd.h>

#include <oneapi/tbb/global_control.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "stages/format/json_text.hpp"

namespace qffuzz {
namespace fs = std::filesystem;
namespace {

fs::path& scratch() {
    static fs::path dir;
    return dir;
}

void remove_scratch() {
    std::error_code ec;
    fs::remove_all(scratch(), ec);
}

}  // namespace

void init_process() {
    static std::unique_ptr<oneapi::tbb::global_control> one_thread;
    if (!one_thread)
        one_thread = std::make_unique<oneapi::tbb::global_control>(oneapi::tbb::global_control::max_allowed_parallelism, 1);
    if (!scratch().empty()) return;
    scratch() = fs::temp_directory_path() / ("qf-fuzz-" + std::to_string(::getpid()));
    fs::remove_all(scratch());
    fs::create_directories(scratch());
    std::atexit(remove_scratch);
}

std::string scratch_path(std::string_view name) { return (scratch() / std::string(name)).string(); }

void clear_scratch() {
    for (const auto& e : fs::directory_iterator(scratch())) fs::remove_all(e.path());
}

std::string hidden_files() {
    std::string names;
    for (const auto& e : fs::directory_iterator(scratch()))
        if (e.path().filename().string().front() == '.') names += (names.empty() ? "" : " ") + e.path().filename().string();
    return names;
}

void write_file(const std::string& path, std::string_view bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) report_finding("write_file", "cannot write " + path);
}

std::string safetensors_image(const std::vector<Tensor>& tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata) {
    std::string json = "{";
    if (!metadata.empty()) {
        json += "\"__metadata__\": {";
        for (std::size_t i = 0; i < metadata.size(); ++i)
            json += (i ? ", " : "") + quantflow::json_quote(metadata[i].first) + ": " + quantflow::json_quote(metadata[i].second);
        json += "}";
    }
    std::string data;
    for (const auto& t : tensors) {
        json += std::string(json.size() > 1 ? ", " : "") + quantflow::json_quote(t.name) + ": {\"dtype\": \"" + t.dtype +
                "\", \"shape\": [";
        for (std::size_t i = 0; i < t.shape.size(); ++i) json += (i ? ", " : "") + std::to_string(t.shape[i]);
        json += "], \"data_offsets\": [" + std::to_string(data.size()) + ", " + std::to_string(data.size() + t.bytes.size()) + "]}";
        data += t.bytes;
    }
    json += "}";
    while (json.size() % 8 != 0) json += ' ';
    std::string image(8, '\0');
    for (int i = 0; i < 8; ++i) image[static_cast<std::size_t>(i)] = static_cast<char>(json.size() >> (8 * i));
    return image + json + data;
}

void report_finding(const char* what, const std::string& detail) {
    std::fprintf(stderr, "fuzz finding in %s: %s\n", what, detail.c_str());
    std::abort();
}

}  // namespace qffuzz
