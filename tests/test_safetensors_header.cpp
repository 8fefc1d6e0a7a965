#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <string>

#include "kernels/error.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/safetensors_header.hpp"
#include "tests/test_support.hpp"

using quantflow::DType;
using quantflow::Error;
using quantflow::MappedFile;
using quantflow::read_safetensors_header;

namespace {

// <tmp>/header_<rule>/model.safetensors holding `header` verbatim and `data_bytes` zero bytes.
std::string malformed(std::string_view rule, std::string_view header, std::size_t data_bytes = 0) {
    const std::string path = qftest::temp_dir("header_" + std::string(rule)) + "/model.safetensors";
    qftest::write_raw_file(path, header, std::vector<std::byte>(data_bytes));
    return path;
}

// For files whose length prefix does not describe the bytes after it.
std::string raw_file(std::string_view rule, std::uint64_t header_length, std::string_view body, bool with_prefix = true) {
    const std::string path = qftest::temp_dir("header_" + std::string(rule)) + "/model.safetensors";
    std::string bytes;
    for (int i = 0; with_prefix && i < 8; ++i) bytes += static_cast<char>(header_length >> (8 * i) & 0xff);
    bytes += body;
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path;
}

// The one-line message read_safetensors_header throws for `path`; "" when it accepts the file.
std::string error_of(const std::string& path) {
    try {
        read_safetensors_header(path);
    } catch (const Error& e) {
        const std::string message = e.what();
        CHECK(message.find('\n') == std::string::npos);
        return message;
    }
    return "";
}

std::string tensor(std::string_view name, std::string_view dtype, std::string_view shape, std::uint64_t begin,
                   std::uint64_t end) {
    return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":" + std::string(shape) +
           ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

}  // namespace

TEST_CASE("reader rejects a file shorter than the 8-byte header length") {
    const std::string p = raw_file("too_small", 0, "abcde", false);
    CHECK(error_of(p) == p + ": file is 5 bytes, shorter than the 8-byte header length");
}

TEST_CASE("reader rejects a header length above 100000000") {
    const std::string p = raw_file("too_large", 123456789012, "{}");
    CHECK_THROWS_WITH_AS(read_safetensors_header(p),
                         (p + ": header length 123456789012 is larger than the 100000000-byte limit").c_str(), Error);
    const std::string q = raw_file("limit_plus_one", 100000001, "{}");
    CHECK(error_of(q) == q + ": header length 100000001 is larger than the 100000000-byte limit");
}

TEST_CASE("reader accepts a header length of exactly 100000000 (then fails because the file is shorter)") {
    const std::string p = raw_file("at_limit", 100000000, "{}");
    CHECK(error_of(p) == p + ": header length 100000000 exceeds the file (file is 10 bytes, header needs 100000008)");
}

TEST_CASE("reader rejects a header length that exceeds the file") {
    const std::string p = raw_file("past_file", 5000, std::string(1192, ' '));
    CHECK(error_of(p) == p + ": header length 5000 exceeds the file (file is 1200 bytes, header needs 5008)");
}

TEST_CASE("reader rejects a header that is not valid JSON") {
    const std::string p = malformed("not_json", R"({"a.weight": {"dtype": "BF16",)");
    CHECK_THROWS_WITH_AS(read_safetensors_header(p), doctest::Contains((p + ": header is not valid JSON (simdjson: ").c_str()), Error);
    const std::string empty = malformed("empty_json", "");
    CHECK(error_of(empty).rfind(empty + ": header is not valid JSON (simdjson: ", 0) == 0);
}

TEST_CASE("reader rejects a header that is not valid UTF-8") {
    const std::string p = malformed("bad_utf8", "{\"__metadata__\":{\"k\":\"\xff\"}}");
    CHECK(error_of(p) == p + ": header is not valid JSON (simdjson: The input is not valid UTF-8)");
}

TEST_CASE("reader rejects header JSON that is not an object") {
    const std::string p = malformed("not_object", "[1, 2]");
    CHECK(error_of(p) == p + ": header JSON is not an object");
}

TEST_CASE("reader rejects trailing bytes after the header JSON (NUL padding, a second object)") {
    const std::string nul = malformed("nul_padding", std::string("{}\0\0\0\0\0\0", 8));
    CHECK(error_of(nul).rfind(nul + ": header is not valid JSON (simdjson: ", 0) == 0);
    const std::string twice = malformed("two_objects", "{}    {}");
    CHECK(error_of(twice).rfind(twice + ": header is not valid JSON (simdjson: ", 0) == 0);
}

TEST_CASE("reader rejects integers of 2^64 or more") {
    const std::string p = malformed("bigint", "{" + tensor("a.weight", "U8", "[18446744073709551616]", 0, 0) + "}");
    CHECK(error_of(p).rfind(p + ": header is not valid JSON (simdjson: ", 0) == 0);
}

TEST_CASE("reader rejects a duplicate tensor key") {
    const std::string p =
        malformed("dup_tensor", "{" + tensor("a.weight", "U8", "[4]", 0, 4) + "," + tensor("a.weight", "U8", "[4]", 0, 4) + "}", 4);
    CHECK(error_of(p) == p + ": duplicate key 'a.weight' in header");
}

TEST_CASE("reader rejects a duplicate __metadata__ key") {
    const std::string p = malformed("dup_metadata", R"({"__metadata__":{"a":"1"},"__metadata__":{"b":"2"}})");
    CHECK(error_of(p) == p + ": duplicate key '__metadata__' in header");
}

TEST_CASE("reader rejects a duplicate key inside __metadata__") {
    const std::string p = malformed("dup_metadata_key", R"({"__metadata__":{"format":"pt","format":"pt"}})");
    CHECK(error_of(p) == p + ": duplicate key 'format' in __metadata__");
}

TEST_CASE("reader rejects a duplicate field inside a tensor entry") {
    const std::string p =
        malformed("dup_field", R"({"a.weight":{"dtype":"U8","dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 4);
    CHECK(error_of(p) == p + ": tensor 'a.weight': duplicate field 'dtype'");
}

TEST_CASE("reader rejects a tensor entry that is not an object") {
    const std::string p = malformed("entry_not_object", R"({"a.weight":[0,4]})");
    CHECK(error_of(p) == p + ": tensor 'a.weight': entry must be an object with dtype, shape and data_offsets");
}

TEST_CASE("reader rejects a tensor entry with a missing field") {
    const std::string no_dtype = malformed("missing_dtype", R"({"a.weight":{"shape":[4],"data_offsets":[0,4]}})", 4);
    CHECK(error_of(no_dtype) == no_dtype + ": tensor 'a.weight': missing field 'dtype'");
    const std::string no_shape = malformed("missing_shape", R"({"a.weight":{"dtype":"U8","data_offsets":[0,4]}})", 4);
    CHECK(error_of(no_shape) == no_shape + ": tensor 'a.weight': missing field 'shape'");
    const std::string no_offsets = malformed("missing_offsets", R"({"a.weight":{"dtype":"U8","shape":[4]}})", 4);
    CHECK(error_of(no_offsets) == no_offsets + ": tensor 'a.weight': missing field 'data_offsets'");
}

TEST_CASE("reader rejects a dtype that is not a string") {
    const std::string p = malformed("dtype_type", R"({"a.weight":{"dtype":8,"shape":[4],"data_offsets":[0,4]}})", 4);
    CHECK(error_of(p) == p + ": tensor 'a.weight': field 'dtype' must be a string");
}

TEST_CASE("reader rejects an unknown dtype (exact, case-sensitive names)") {
    const std::string p = malformed("unknown_dtype", "{" + tensor("a.weight", "F8_E4M3FN", "[4]", 0, 4) + "}", 4);
    CHECK(error_of(p) == p + ": tensor 'a.weight': unknown dtype 'F8_E4M3FN'");
    const std::string lower = malformed("lower_dtype", "{" + tensor("a.weight", "bf16", "[2]", 0, 4) + "}", 4);
    CHECK(error_of(lower) == lower + ": tensor 'a.weight': unknown dtype 'bf16'");
}

TEST_CASE("reader rejects a shape that is not an array of non-negative integers") {
    for (const std::string shape : {"[-1]", "[8.0]", "[8e0]", "[\"8\"]", "8", "[[8]]", "null"}) {
        CAPTURE(shape);
        const std::string p = malformed("bad_shape", "{" + tensor("a.weight", "U8", shape, 0, 8) + "}", 8);
        CHECK(error_of(p) == p + ": tensor 'a.weight': field 'shape' must be an array of non-negative integers");
    }
}

TEST_CASE("reader rejects a shape dimension above 2^63-1") {
    const std::string p = malformed("huge_dim", "{" + tensor("a.weight", "U8", "[9223372036854775808, 0]", 0, 0) + "}");
    CHECK(error_of(p) ==
          p + ": tensor 'a.weight': shape [9223372036854775808, 0] has a dimension above 9223372036854775807");
}

TEST_CASE("reader rejects a shape whose element count overflows 64 bits") {
    const std::string p =
        malformed("elements_overflow", "{" + tensor("a.weight", "BF16", "[4294967296,4294967296,16]", 0, 0) + "}");
    CHECK(error_of(p) == p + ": tensor 'a.weight': shape [4294967296, 4294967296, 16] overflows 64-bit element count");
}

TEST_CASE("reader rejects a shape whose byte size overflows 64 bits") {
    const std::string p = malformed("bytes_overflow", "{" + tensor("a.weight", "F32", "[4611686018427387904,2]", 0, 0) + "}");
    CHECK(error_of(p) == p + ": tensor 'a.weight': shape [4611686018427387904, 2] of F32 overflows 64-bit byte count");
}

TEST_CASE("reader rejects a sub-byte dtype whose bit count is not a multiple of 8") {
    const std::string p = malformed("subbyte", "{" + tensor("a.weight", "F4", "[3]", 0, 2) + "}", 2);
    CHECK(error_of(p) == p + ": tensor 'a.weight': shape [3] of F4 is 12 bits, not a whole number of bytes");
    const std::string f6 = malformed("subbyte_f6", "{" + tensor("a.weight", "F6_E2M3", "[5]", 0, 4) + "}", 4);
    CHECK(error_of(f6) == f6 + ": tensor 'a.weight': shape [5] of F6_E2M3 is 30 bits, not a whole number of bytes");
}

TEST_CASE("reader rejects data_offsets that are not two non-negative integers") {
    for (const std::string offsets : {"[0]", "[0,4,8]", "[-4,4]", "[0,4.0]", "[\"0\",\"4\"]", "{}"}) {
        CAPTURE(offsets);
        const std::string p = malformed(
            "bad_offsets", R"({"a.weight":{"dtype":"U8","shape":[4],"data_offsets":)" + offsets + "}}", 4);
        CHECK(error_of(p) == p + ": tensor 'a.weight': field 'data_offsets' must be an array of two non-negative integers");
    }
}

TEST_CASE("reader rejects reversed data_offsets") {
    const std::string p = malformed("reversed", "{" + tensor("a.weight", "U8", "[20]", 40, 20) + "}", 40);
    CHECK(error_of(p) == p + ": tensor 'a.weight': data_offsets [40, 20] are reversed");
}

TEST_CASE("reader rejects data_offsets whose size differs from shape times dtype size") {
    const std::string p = malformed("size_mismatch", "{" + tensor("a.weight", "BF16", "[10,20]", 0, 100) + "}", 100);
    CHECK(error_of(p) == p + ": tensor 'a.weight': data_offsets [0, 100] hold 100 bytes but shape [10, 20] of BF16 needs 400");
}

TEST_CASE("reader rejects data_offsets that end past the data block") {
    const std::string p = malformed("past_data", "{" + tensor("x", "U8", "[600]", 0, 600) + "}", 500);
    CHECK(error_of(p) == p + ": tensor 'x': data_offsets [0, 600] end past the 500-byte data block");
}

TEST_CASE("reader rejects a gap between tensors") {
    const std::string p = malformed(
        "gap", "{" + tensor("b.weight", "U8", "[100]", 100, 200) + "," + tensor("a.weight", "U8", "[80]", 0, 80) + "}", 200);
    CHECK(error_of(p) ==
          p + ": tensor 'b.weight': data_offsets [100, 200] leave a gap of 20 bytes after tensor 'a.weight' (ends at 80)");
}

TEST_CASE("reader rejects overlapping tensors") {
    const std::string p = malformed(
        "overlap", "{" + tensor("a.weight", "U8", "[120]", 0, 120) + "," + tensor("b.weight", "U8", "[100]", 100, 200) + "}",
        200);
    CHECK(error_of(p) == p + ": tensor 'b.weight': data_offsets [100, 200] overlap tensor 'a.weight' (ends at 120)");
    const std::string inside = malformed(
        "overlap_empty", "{" + tensor("a.weight", "U8", "[100]", 0, 100) + "," + tensor("e", "U8", "[0]", 50, 50) + "}", 100);
    CHECK(error_of(inside) == inside + ": tensor 'e': data_offsets [50, 50] overlap tensor 'a.weight' (ends at 100)");
}

TEST_CASE("reader rejects a first tensor that does not start the data block") {
    const std::string p = malformed("first_gap", "{" + tensor("a.weight", "U8", "[80]", 16, 96) + "}", 96);
    CHECK(error_of(p) == p + ": tensor 'a.weight': data_offsets [16, 96] leave a gap of 16 bytes: the first tensor starts "
                             "at 16, the data block starts at 0");
}

TEST_CASE("reader rejects data block bytes that no tensor covers") {
    const std::string p = malformed("trailing_data", "{" + tensor("a.weight", "U8", "[480]", 0, 480) + "}", 500);
    CHECK(error_of(p) == p + ": data block is 500 bytes but tensors cover 480 (20 bytes not covered)");
    const std::string none = malformed("no_tensors", "{}", 8);
    CHECK(error_of(none) == none + ": data block is 8 bytes but tensors cover 0 (8 bytes not covered)");
}

TEST_CASE("reader rejects __metadata__ that is not an object") {
    const std::string p = malformed("metadata_type", R"({"__metadata__":["format","pt"]})");
    CHECK(error_of(p) == p + ": __metadata__ is not an object");
}

TEST_CASE("reader rejects a __metadata__ value that is not a string") {
    const std::string p = malformed("metadata_value", R"({"__metadata__":{"note":"x","format":1}})");
    CHECK(error_of(p) == p + ": __metadata__ value for key 'format' is not a string");
}

TEST_CASE("reader keeps messages on one line for names with control characters") {
    const std::string p = malformed("control_name", R"({"a\nb":{"dtype":"F8_E4M3FN","shape":[0],"data_offsets":[0,0]}})");
    CHECK(error_of(p) == p + ": tensor 'a\\x0ab': unknown dtype 'F8_E4M3FN'");
}

TEST_CASE("reader names the path when the file cannot be opened or is not a regular file") {
    const std::string dir = qftest::temp_dir("header_open");
    CHECK(error_of(dir + "/absent.safetensors") == dir + "/absent.safetensors: cannot open: No such file or directory");
    CHECK(error_of(dir) == dir + ": not a regular file");
}

TEST_CASE("reader parses the reference fixture: 19 tensors in file order and its metadata") {
    const auto h = read_safetensors_header(QF_FIXTURES "/small_model.safetensors");
    CHECK(h.tensors.size() == 19);
    CHECK(h.header_length == 1720);
    CHECK(h.data_start == 1728);
    CHECK(h.file_size == 1947752);
    REQUIRE(h.has_metadata);
    CHECK(h.metadata == std::vector<std::pair<std::string, std::string>>{{"format", "pt"}, {"note", "synthetic"}});
    CHECK(h.tensors.front().name == "f32.proj.weight");
    CHECK(h.tensors.back().name == "f16.proj.weight");
    CHECK(h.tensors.back().end == h.file_size - h.data_start);
    for (std::size_t i = 1; i < h.tensors.size(); ++i) CHECK(h.tensors[i].begin == h.tensors[i - 1].end);
    const auto conv = h.find("conv.weight");
    REQUIRE(conv >= 0);
    const auto& t = h.tensors[static_cast<std::size_t>(conv)];
    CHECK(t.dtype == DType::BF16);
    CHECK(t.shape == std::vector<std::int64_t>{64, 32, 3, 3});
    CHECK(t.elements() == 64 * 32 * 3 * 3);
    CHECK(t.bytes() == 2 * t.elements());
    CHECK(h.find("missing.weight") == -1);
}

TEST_CASE("reader sorts tensors by data_offsets, not by JSON order") {
    const std::string p = qftest::temp_dir("header_sorted") + "/model.safetensors";
    qftest::write_raw_file(p, "{" + tensor("second", "U8", "[4]", 4, 8) + "," + tensor("first", "U8", "[4]", 0, 4) + "}",
                           std::vector<std::byte>(8));
    const auto h = read_safetensors_header(p);
    REQUIRE(h.tensors.size() == 2);
    CHECK(h.tensors[0].name == "first");
    CHECK(h.tensors[1].name == "second");
    CHECK_FALSE(h.has_metadata);
}

TEST_CASE("reader accepts leading whitespace and trailing JSON whitespace padding") {
    const std::string p = malformed("whitespace", " \n\t{" + tensor("a.weight", "U8", "[4]", 0, 4) + "}  \t\r\n  ", 4);
    CHECK(error_of(p) == "");
    CHECK(read_safetensors_header(p).tensors.at(0).name == "a.weight");
}

TEST_CASE("reader accepts __metadata__ null as no metadata, and an empty __metadata__ object") {
    const auto none = read_safetensors_header(malformed("metadata_null", R"({"__metadata__":null})"));
    CHECK_FALSE(none.has_metadata);
    CHECK(none.metadata.empty());
    const auto empty = read_safetensors_header(malformed("metadata_empty", R"({"__metadata__":{}})"));
    CHECK(empty.has_metadata);
    CHECK(empty.metadata.empty());
}

TEST_CASE("reader accepts zero-size tensors sharing an offset") {
    const std::string p = malformed("zero_size", "{" + tensor("e1", "F32", "[0,16]", 0, 0) + "," +
                                                     tensor("a", "U8", "[4]", 0, 4) + "," + tensor("e2", "BF16", "[0]", 4, 4) +
                                                     "," + tensor("e3", "I8", "[3,0]", 4, 4) + "}",
                                  4);
    const auto h = read_safetensors_header(p);
    REQUIRE(h.tensors.size() == 4);
    CHECK(h.tensors[0].name == "e1");
    CHECK(h.tensors[1].name == "a");
    CHECK(h.tensors[2].name == "e2");
    CHECK(h.tensors[3].name == "e3");
    CHECK(h.tensors[0].elements() == 0);
}

TEST_CASE("reader accepts rank-0 scalars as one element") {
    const auto h = read_safetensors_header(malformed("scalar", "{" + tensor("s", "F64", "[]", 0, 8) + "}", 8));
    REQUIRE(h.tensors.size() == 1);
    CHECK(h.tensors[0].shape.empty());
    CHECK(h.tensors[0].elements() == 1);
    CHECK(h.tensors[0].dtype == DType::F64);
}

TEST_CASE("reader accepts sub-byte dtypes that fill whole bytes and ignores unknown tensor fields") {
    const std::string p = malformed(
        "subbyte_ok",
        R"({"f4":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3],"extra":{"x":[1]}},"f6":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[3,6]}})",
        6);
    const auto h = read_safetensors_header(p);
    REQUIRE(h.tensors.size() == 2);
    CHECK(h.tensors[0].dtype == DType::F4);
    CHECK(h.tensors[1].dtype == DType::F6_E3M2);
}

TEST_CASE("parse_safetensors_header applies the same rules to header text") {
    const std::string json = "{" + tensor("a.weight", "BF16", "[2]", 0, 4) + "}";
    const auto h = quantflow::parse_safetensors_header("mem.safetensors", json, json.size(), 8 + json.size() + 4);
    CHECK(h.tensors.at(0).bytes() == 4);
    CHECK_THROWS_WITH_AS(quantflow::parse_safetensors_header("mem.safetensors", json, json.size(), 8 + json.size() + 6),
                         "mem.safetensors: data block is 6 bytes but tensors cover 4 (2 bytes not covered)", Error);
}

TEST_CASE("mapped file views are bounds-checked and release keeps the bytes readable") {
    const std::string dir = qftest::temp_dir("header_mapped");
    const std::string p = dir + "/data.bin";
    std::string bytes(3 * 4096 + 100, '\0');
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    const MappedFile f(p);
    CHECK(f.size() == bytes.size());
    CHECK(f.path() == p);
    CHECK(std::memcmp(f.view(5000, 100), bytes.data() + 5000, 100) == 0);
    CHECK(f.view(f.size(), 0) != nullptr);
    CHECK_THROWS_WITH_AS(f.view(12000, 400), (p + ": byte range at offset 12000 of length 400 lies outside the 12388-byte file").c_str(),
                         Error);
    CHECK_THROWS_AS(f.view(13000, 0), Error);
    CHECK_THROWS_AS(f.view(8, UINT64_MAX - 4), Error);
    f.prefetch(0, UINT64_MAX);
    f.release(10, 9000);   // pages [4096, 8192) dropped, partial ones kept
    f.release(0, f.size());
    f.release(f.size() + 10, 10);
    CHECK(std::memcmp(f.view(0, f.size()), bytes.data(), bytes.size()) == 0);
}

TEST_CASE("mapped file handles an empty file and names a missing one") {
    const std::string dir = qftest::temp_dir("header_mapped_empty");
    std::ofstream(dir + "/empty.bin").close();
    const MappedFile f(dir + "/empty.bin");
    CHECK(f.size() == 0);
    CHECK_NOTHROW(f.view(0, 0));
    CHECK_THROWS_AS(f.view(0, 1), Error);
    f.release(0, 100);
    CHECK_THROWS_WITH_AS(MappedFile(dir + "/absent.bin"), (dir + "/absent.bin: cannot open: No such file or directory").c_str(),
                         Error);
}
