// Batch mode building blocks: input collection (files, globs, directories, manifests), shards, the lock,
// stale temp files and the resume verdict.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <utime.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "kernels/error.hpp"
#include "pipeline/batch.hpp"
#include "pipeline/convert.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

void touch(const std::string& path, const std::string& text = "x") { std::ofstream(path) << text; }

std::vector<std::string> keys(const std::vector<BatchItem>& items) {
    std::vector<std::string> out;
    for (const auto& i : items) out.push_back(i.key);
    return out;
}

}  // namespace

TEST_CASE("shards: deterministic, and N shards cover every input exactly once") {
    std::vector<std::string> all;
    for (int i = 0; i < 57; ++i) all.push_back("models/finetune_" + std::to_string(i) + ".safetensors");
    for (int n = 1; n <= 7; ++n) {
        CAPTURE(n);
        std::multiset<std::string> covered;
        for (int s = 0; s < n; ++s)
            for (const auto& k : all)
                if (in_shard(k, {s, n})) covered.insert(k);
        CHECK(covered.size() == all.size());
        CHECK(std::set<std::string>(covered.begin(), covered.end()).size() == all.size());
    }
    // Stable: the verdict depends on the key alone (same on every machine and every run).
    CHECK(in_shard("models/finetune_3.safetensors", {1, 4}) == in_shard(std::string("models/finetune_3.safetensors"), {1, 4}));
    CHECK(parse_shard("2/5").index == 2);
    CHECK(parse_shard("2/5").count == 5);
    CHECK(error_of([] { parse_shard("5/5"); }) == "--shard '5/5' must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4)");
    CHECK(error_of([] { parse_shard("1-4"); }) == "--shard '1-4' must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4)");
}

TEST_CASE("inputs from files, globs, directories (recursive) and a manifest with overrides") {
    const std::string dir = qftest::temp_dir("batch_inputs");
    std::filesystem::create_directories(dir + "/sub");
    touch(dir + "/b.safetensors");
    touch(dir + "/a.safetensors");
    touch(dir + "/notes.txt");
    touch(dir + "/sub/c.safetensors");
    CHECK(keys(collect_batch_items({dir}, false, "")) == std::vector<std::string>{dir + "/a.safetensors", dir + "/b.safetensors"});
    CHECK(keys(collect_batch_items({dir}, true, "")).size() == 3);
    CHECK(keys(collect_batch_items({dir + "/*.safetensors"}, false, "")).size() == 2);
    CHECK(error_of([&] { collect_batch_items({dir + "/missing.safetensors"}, false, ""); }) ==
          dir + "/missing.safetensors: no such file or directory");
    CHECK(error_of([&] { collect_batch_items({dir + "/sub/*.bin"}, false, ""); }) == dir + "/sub/*.bin: the pattern matches no file");

    touch(dir + "/m.json", R"({"defaults": {"comfy_quant": true},
        "files": ["a.safetensors", {"input": "sub/c.safetensors", "output": "c_int8.safetensors", "int8": true,
                                    "block_size": 128, "simple": false, "model": ["wan", "t5xxl"]}]})");
    const auto items = collect_batch_items({dir + "/b.safetensors"}, false, dir + "/m.json");
    REQUIRE(items.size() == 3);  // sorted by key: the path as listed (manifest keys stay as written: stable across machines)
    CHECK(items[0].key == dir + "/b.safetensors");
    CHECK(items[0].args.empty());
    CHECK(items[1].key == "a.safetensors");
    CHECK(items[1].input == dir + "/a.safetensors");
    CHECK(items[1].args == std::vector<std::string>{"--comfy_quant"});
    CHECK(items[2].key == "sub/c.safetensors");
    CHECK(items[2].output == "c_int8.safetensors");
    CHECK(items[2].args == std::vector<std::string>{"--comfy_quant", "--int8", "--block_size=128", "!--simple", "--model=wan", "--model=t5xxl"});
    touch(dir + "/bad.json", R"({"files": [{"output": "x"}]})");
    CHECK(error_of([&] { collect_batch_items({}, false, dir + "/bad.json"); }) == dir + "/bad.json: entry 0: missing \"input\"");
    touch(dir + "/bad2.json", R"({"files": [], "extra": 1})");
    CHECK(error_of([&] { collect_batch_items({}, false, dir + "/bad2.json"); }) ==
          dir + "/bad2.json: unknown key 'extra' (expected files, defaults)");
}

TEST_CASE("the batch lock stops a second run on the same directory and shard, not on another shard") {
    const std::string dir = qftest::temp_dir("batch_lock");
    {
        const BatchLock first(dir, {0, 1});
        CHECK(error_of([&] { BatchLock second(dir, {0, 1}); }) ==
              dir + "/.quantflow-batch.lock: another quantflow batch is writing to " + dir + " (this shard); wait for it to finish");
        const BatchLock other_shard(dir, {1, 2});
        CHECK(qftest::file_exists(dir + "/.quantflow-batch.shard-1-of-2.lock"));
    }
    CHECK(qftest::list_dir(dir).empty());  // released and removed
    const BatchLock again(dir, {0, 1});
}

TEST_CASE("stale temp files of an output are removed, other files are not") {
    const std::string dir = qftest::temp_dir("batch_stale");
    touch(dir + "/.out.safetensors.qf-tmp.1234.55");
    touch(dir + "/.out.safetensors.qf-tmp.999.1");
    touch(dir + "/.other.safetensors.qf-tmp.1.1");
    touch(dir + "/out.safetensors.keep");
    CHECK(remove_stale_temps({dir + "/out.safetensors"}) == 2);
    CHECK(qftest::list_dir(dir) == std::vector<std::string>{".other.safetensors.qf-tmp.1.1", "out.safetensors.keep"});
}

TEST_CASE("resume verdict: only a valid output of the same input and options counts as done") {
    const std::string dir = qftest::temp_dir("batch_resume");
    const std::string in = dir + "/m.safetensors", out = dir + "/o.safetensors";
    std::filesystem::copy_file(std::string(QF_FIXTURES) + "/small_model.safetensors", in);
    Options o;
    o.input = in;
    o.output = out;
    o.comfy_quant = true;
    o.simple = true;
    o.manual_seed = 0;
    o.progress = "none";
    const Prepared p = prepare_conversion(o);
    const auto& h = p.plan.input;
    const std::string canonical = canonical_options(p.options);
    CHECK(resume_verdict(out, "m.safetensors", h.file_size, h.mtime_ns, h.header_hash, canonical) == "no output yet");
    Progress quiet(ProgressStyle::None, 1);
    execute_conversion(p, quiet);
    CHECK(resume_verdict(out, "m.safetensors", h.file_size, h.mtime_ns, h.header_hash, canonical).empty());
    CHECK(resume_verdict(out, "m.safetensors", h.file_size, h.mtime_ns, h.header_hash, canonical + " --heur") ==
          "the options differ (" + canonical + " vs " + canonical + " --heur)");
    CHECK(resume_verdict(out, "m.safetensors", h.file_size, h.mtime_ns + 1, h.header_hash, canonical) ==
          "the input was modified since the output was made");
    CHECK(resume_verdict(out, "m.safetensors", h.file_size + 8, h.mtime_ns, h.header_hash, canonical).starts_with("the input changed size"));
    CHECK(resume_verdict(out, "n.safetensors", h.file_size, h.mtime_ns, h.header_hash, canonical) ==
          "the existing output was made from m.safetensors");
    std::filesystem::resize_file(out, std::filesystem::file_size(out) - 1);  // a truncated copy
    CHECK(resume_verdict(out, "m.safetensors", h.file_size, h.mtime_ns, h.header_hash, canonical).starts_with("the existing output is not valid ("));
}
