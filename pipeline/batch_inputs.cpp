// Batch inputs (pipeline/batch.hpp): files, globs, directories and manifests; shards.
#include "pipeline/batch.hpp"

#include <glob.h>

#include <simdjson.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "kernels/error.hpp"

namespace fs = std::filesystem;

namespace quantflow {
namespace {

bool has_glob(const std::string& p) { return p.find_first_of("*?[") != std::string::npos; }

bool is_safetensors(const fs::path& p) { return p.extension() == ".safetensors"; }

void add_directory(const std::string& dir, bool recursive, std::vector<BatchItem>& out) {
    std::vector<std::string> found;
    const auto take = [&](const fs::directory_entry& e) {
        if (e.is_regular_file() && is_safetensors(e.path())) found.push_back(e.path().string());
    };
    if (recursive)
        for (const auto& e : fs::recursive_directory_iterator(dir)) take(e);
    else
        for (const auto& e : fs::directory_iterator(dir)) take(e);
    if (found.empty())
        throw Error(dir + ": no .safetensors files" + std::string(recursive ? "" : " (pass --recursive to look in subdirectories)"));
    for (auto& f : found) out.push_back({f, f, "", {}});
}

void add_path(const std::string& path, bool recursive, std::vector<BatchItem>& out) {
    if (has_glob(path)) {
        glob_t g{};
        const int rc = ::glob(path.c_str(), 0, nullptr, &g);
        std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + (rc == 0 ? g.gl_pathc : 0));
        ::globfree(&g);
        if (matches.empty()) throw Error(path + ": the pattern matches no file");
        for (const auto& m : matches) add_path(m, recursive, out);
        return;
    }
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) throw Error(path + ": no such file or directory");
    if (fs::is_directory(status)) return add_directory(path, recursive, out);
    out.push_back({path, path, "", {}});
}

// A manifest value as command-line arguments for `--key`.
void add_override(const std::string& where, const std::string& key, simdjson::dom::element value, std::vector<std::string>& args) {
    const std::string flag = "--" + key;
    bool b = false;
    std::string_view text;
    if (value.get_bool().get(b) == simdjson::SUCCESS) {
        args.push_back(b ? flag : "!" + flag);
    } else if (value.get_string().get(text) == simdjson::SUCCESS) {
        args.push_back(flag + "=" + std::string(text));
    } else if (value.is_int64() || value.is_uint64() || value.is_double()) {
        args.push_back(flag + "=" + simdjson::minify(value));
    } else if (value.is_array()) {
        for (const auto item : value.get_array()) {
            if (item.get_string().get(text) != simdjson::SUCCESS) throw Error(where + ": '" + key + "' must be a list of strings");
            args.push_back(flag + "=" + std::string(text));
        }
    } else {
        throw Error(where + ": '" + key + "' must be true/false, a number, a string or a list of strings");
    }
}

void add_manifest(const std::string& manifest, std::vector<BatchItem>& out) {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.load(manifest).get(doc) != simdjson::SUCCESS) throw Error(manifest + ": cannot read the manifest as JSON");
    const fs::path base = fs::path(manifest).parent_path();
    simdjson::dom::array files;
    std::vector<std::string> defaults;
    if (doc.is_array()) {
        files = doc.get_array();
    } else if (doc.is_object()) {
        if (doc["files"].get_array().get(files) != simdjson::SUCCESS)
            throw Error(manifest + ": expected {\"files\": [...]} or a JSON array of entries");
        simdjson::dom::object d;
        if (doc["defaults"].get_object().get(d) == simdjson::SUCCESS)
            for (const auto field : d) add_override(manifest + ": defaults", std::string(field.key), field.value, defaults);
        for (const auto field : doc.get_object())
            if (field.key != "files" && field.key != "defaults")
                throw Error(manifest + ": unknown key '" + std::string(field.key) + "' (expected files, defaults)");
    } else {
        throw Error(manifest + ": expected {\"files\": [...]} or a JSON array of entries");
    }
    std::size_t n = 0;
    for (const auto entry : files) {
        const std::string where = manifest + ": entry " + std::to_string(n++);
        BatchItem item;
        item.args = defaults;
        std::string_view text;
        if (entry.get_string().get(text) == simdjson::SUCCESS) {
            item.key = std::string(text);
        } else if (entry.is_object()) {
            for (const auto field : entry.get_object()) {
                const std::string key(field.key);
                if (key == "input" || key == "output") {
                    if (field.value.get_string().get(text) != simdjson::SUCCESS) throw Error(where + ": '" + key + "' must be a string");
                    (key == "input" ? item.key : item.output) = std::string(text);
                } else {
                    add_override(where, key, field.value, item.args);
                }
            }
            if (item.key.empty()) throw Error(where + ": missing \"input\"");
        } else {
            throw Error(where + ": expected a path or an object with \"input\"");
        }
        const fs::path p(item.key);
        item.input = p.is_absolute() || base.empty() ? item.key : (base / p).string();
        std::error_code ec;  // a name too long for the filesystem is an answer too (fuzz: manifest-crash-4b04f46d)
        if (!fs::exists(item.input, ec)) throw Error(where + ": " + item.input + ": " + (ec ? ec.message() : "no such file"));
        out.push_back(std::move(item));
    }
}

std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
    return h;
}

}  // namespace

std::vector<BatchItem> collect_batch_items(const std::vector<std::string>& paths, bool recursive, const std::string& manifest) {
    std::vector<BatchItem> items;
    for (const auto& p : paths) add_path(p, recursive, items);
    if (!manifest.empty()) add_manifest(manifest, items);
    // One entry per input file; a manifest entry (with overrides) wins over a plain listing of the same file.
    std::map<std::string, BatchItem> unique;
    for (auto& item : items) {
        std::error_code ec;
        const std::string id = fs::weakly_canonical(item.input, ec).string();
        auto it = unique.find(id);
        if (it == unique.end() || (!item.args.empty() || !item.output.empty())) unique[id] = std::move(item);
    }
    std::vector<BatchItem> out;
    for (auto& [_, item] : unique) out.push_back(std::move(item));
    std::sort(out.begin(), out.end(), [](const BatchItem& a, const BatchItem& b) { return a.key < b.key; });
    if (out.empty()) throw Error("batch: no inputs (give files, globs, directories or --manifest)", ExitCode::kUsage);
    return out;
}

Shard parse_shard(std::string_view text) {
    const auto slash = text.find('/');
    int i = -1, n = 0;
    try {
        if (slash != std::string_view::npos) {
            std::size_t used = 0;
            i = std::stoi(std::string(text.substr(0, slash)), &used);
            if (used != slash) i = -1;
            n = std::stoi(std::string(text.substr(slash + 1)), &used);
            if (used != text.size() - slash - 1) n = 0;
        }
    } catch (const std::exception&) {
        n = 0;
    }
    if (n < 1 || i < 0 || i >= n)
        throw Error("--shard '" + std::string(text) + "' must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4)", ExitCode::kUsage);
    return {i, n};
}

bool in_shard(const std::string& key, const Shard& shard) {
    return static_cast<int>(fnv1a(key) % static_cast<std::uint64_t>(shard.count)) == shard.index;
}

}  // namespace quantflow
