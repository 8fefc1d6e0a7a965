// Crash-safe output: nothing under the final name until commit, no temp file left on any failure.
#include <doctest/doctest.h>

#include <cerrno>
#include <fstream>

#include "kernels/error.hpp"
#include "stages/format/output_file.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

TEST_CASE("output file: committed bytes appear under the final name, temp file gone") {
    const std::string dir = qftest::temp_dir("output_commit");
    {
        OutputFile out(dir + "/model.safetensors", 8, false);
        CHECK(qftest::list_dir(dir).size() == 1);
        CHECK(qftest::list_dir(dir)[0].rfind(".model.safetensors.qf-tmp.", 0) == 0);
        CHECK_FALSE(qftest::file_exists(dir + "/model.safetensors"));
        out.write_at(4, "5678", 4);
        out.write_at(0, "1234", 4);
        out.commit();
    }
    CHECK(qftest::list_dir(dir) == std::vector<std::string>{"model.safetensors"});
    const auto bytes = qftest::read_file(dir + "/model.safetensors");
    CHECK(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()) == "12345678");
}

TEST_CASE("output file: an error before commit leaves no file at all") {
    const std::string dir = qftest::temp_dir("output_error");
    try {
        OutputFile out(dir + "/model.safetensors", 1024, false);
        out.write_at(0, "abc", 3);
        throw Error("simulated failure in the middle of a conversion");
    } catch (const Error&) {
    }
    CHECK(qftest::list_dir(dir).empty());
}

TEST_CASE("output file: an existing output is refused without --overwrite and kept intact") {
    const std::string dir = qftest::temp_dir("output_exists");
    std::ofstream(dir + "/model.safetensors") << "old";
    CHECK_THROWS_WITH_AS(OutputFile(dir + "/model.safetensors", 8, false),
                         doctest::Contains("output file exists; pass --overwrite to replace it"), Error);
    CHECK(qftest::list_dir(dir) == std::vector<std::string>{"model.safetensors"});
    OutputFile out(dir + "/model.safetensors", 3, true);
    out.write_at(0, "new", 3);
    out.commit();
    const auto bytes = qftest::read_file(dir + "/model.safetensors");
    CHECK(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()) == "new");
}

TEST_CASE("output file: not enough free space is refused before anything is created") {
    const std::string dir = qftest::temp_dir("output_space");
    CHECK_THROWS_WITH_AS(OutputFile(dir + "/huge.safetensors", 1ull << 60, false),
                         doctest::Contains("not enough free space"), Error);
    CHECK(qftest::list_dir(dir).empty());
}

TEST_CASE("output file: a missing directory is a clear error") {
    CHECK_THROWS_WITH_AS(OutputFile("/nonexistent-dir-qf/x.safetensors", 8, false),
                         doctest::Contains("output directory '/nonexistent-dir-qf' does not exist"), Error);
}

TEST_CASE("output file: a disk that fills up mid-write fails with ENOSPC's text and leaves nothing") {
    const std::string dir = qftest::temp_dir("output_enospc");
    {
        OutputFile out(dir + "/model.safetensors", 16, false, {InjectedFault::Step::Write, ENOSPC, 6});
        out.write_at(0, "1234", 4);
        CHECK_THROWS_WITH_AS(out.write_at(4, "5678", 4),
                             (dir + "/model.safetensors: write of 4 bytes at offset 4 failed: No space left on device").c_str(), Error);
        CHECK_THROWS_WITH_AS(out.write_at(8, "9", 1), doctest::Contains("No space left on device"), Error);  // it stays full
    }
    CHECK(qftest::list_dir(dir).empty());
}

TEST_CASE("disk faults: EIO on write is one line naming the file; nothing is published") {
    const std::string dir = qftest::temp_dir("output_eio_write");
    {
        OutputFile out(dir + "/model.safetensors", 16, false, {InjectedFault::Step::Write, EIO, 0});
        CHECK_THROWS_WITH_AS(out.write_at(0, "1234", 4),
                             (dir + "/model.safetensors: write of 4 bytes at offset 0 failed: Input/output error").c_str(), Error);
    }
    CHECK(qftest::list_dir(dir).empty());
}

TEST_CASE("disk faults: EIO on fdatasync fails the commit; the final name is not created, the temp file is removed") {
    const std::string dir = qftest::temp_dir("output_eio_sync");
    {
        OutputFile out(dir + "/model.safetensors", 4, false, {InjectedFault::Step::Sync, EIO, 0});
        out.write_at(0, "1234", 4);
        CHECK_THROWS_WITH_AS(out.commit(), (dir + "/model.safetensors: fdatasync failed: Input/output error").c_str(), Error);
        CHECK_FALSE(qftest::file_exists(dir + "/model.safetensors"));
    }
    CHECK(qftest::list_dir(dir).empty());
}

TEST_CASE("output file: sync() then commit() publishes once; no fault injected means none happens") {
    const std::string dir = qftest::temp_dir("output_sync_commit");
    {
        OutputFile out(dir + "/model.safetensors", 4, false);
        out.write_at(0, "abcd", 4);
        out.sync();
        CHECK_FALSE(qftest::file_exists(dir + "/model.safetensors"));
        out.commit();
    }
    CHECK(qftest::list_dir(dir) == std::vector<std::string>{"model.safetensors"});
}
