#include "stages/format/safetensors_header.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <simdjson.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <unordered_set>

#include "kernels/error.hpp"

namespace quantflow {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

[[noreturn]] void fail(std::string_view path, const std::string& what) {
    throw Error(std::string(path) + ": " + what);
}

// Names come from JSON and may hold escaped control characters; messages must stay on one line.
std::string in_quotes(std::string_view name) {
    std::string s = "'";
    for (const char c : name) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
            s += hex;
        } else {
            s += c;
        }
    }
    return s + "'";
}

std::string list_text(const std::vector<std::uint64_t>& values) {
    std::string s = "[";
    for (std::size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
    return s + "]";
}

// Only JSON integers count: simdjson types 8.0 and 8e0 as DOUBLE, and numbers >= 2^64 fail to parse.
bool get_unsigned(element e, std::uint64_t& out) {
    if (e.type() != element_type::INT64 && e.type() != element_type::UINT64) return false;
    return !e.get_uint64().get(out);  // a negative INT64 is out of range here
}

bool get_unsigned_array(element e, std::vector<std::uint64_t>& out) {
    simdjson::dom::array array;
    if (e.get_array().get(array)) return false;
    for (const element item : array) {
        std::uint64_t v = 0;
        if (!get_unsigned(item, v)) return false;
        out.push_back(v);
    }
    return true;
}

void check_lengths(std::string_view path, std::uint64_t header_length, std::uint64_t file_size) {
    if (file_size < 8)
        fail(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
    if (header_length > kMaxHeaderBytes)
        fail(path, "header length " + std::to_string(header_length) + " is larger than the " +
                       std::to_string(kMaxHeaderBytes) + "-byte limit");
    if (header_length > file_size - 8)
        fail(path, "header length " + std::to_string(header_length) + " exceeds the file (file is " +
                       std::to_string(file_size) + " bytes, header needs " + std::to_string(header_length + 8) + ")");
}

TensorInfo parse_tensor(std::string_view path, std::string_view name, element entry, std::uint64_t data_size) {
    const auto where = [&] { return "tensor " + in_quotes(name) + ": "; };
    simdjson::dom::object object;
    if (entry.get_object().get(object))
        fail(path, where() + "entry must be an object with dtype, shape and data_offsets");

    std::optional<element> dtype_field, shape_field, offsets_field;
    for (const auto field : object) {
        std::optional<element>* slot = field.key == "dtype"          ? &dtype_field
                                       : field.key == "shape"        ? &shape_field
                                       : field.key == "data_offsets" ? &offsets_field
                                                                     : nullptr;
        if (slot == nullptr) continue;  // unknown keys are ignored, as safetensors does
        if (slot->has_value()) fail(path, where() + "duplicate field " + in_quotes(field.key));
        *slot = field.value;
    }
    for (const auto& [field, label] : {std::pair{&dtype_field, "dtype"}, std::pair{&shape_field, "shape"},
                                       std::pair{&offsets_field, "data_offsets"}})
        if (!field->has_value()) fail(path, where() + "missing field '" + label + "'");

    TensorInfo t;
    t.name = std::string(name);
    std::string_view dtype_text;
    if (dtype_field->get_string().get(dtype_text)) fail(path, where() + "field 'dtype' must be a string");
    const auto dtype = dtype_from_name(dtype_text);
    if (!dtype) fail(path, where() + "unknown dtype " + in_quotes(dtype_text));
    t.dtype = *dtype;

    std::vector<std::uint64_t> shape;
    if (!get_unsigned_array(*shape_field, shape))
        fail(path, where() + "field 'shape' must be an array of non-negative integers");
    const auto shape_text = [&] { return "shape " + list_text(shape); };
    std::uint64_t elements = 1;
    for (const std::uint64_t dim : shape) {
        if (dim > static_cast<std::uint64_t>(INT64_MAX))
            fail(path, where() + shape_text() + " has a dimension above " + std::to_string(INT64_MAX));
        t.shape.push_back(static_cast<std::int64_t>(dim));
    }
    for (const std::uint64_t dim : shape)
        if (__builtin_mul_overflow(elements, dim, &elements))
            fail(path, where() + shape_text() + " overflows 64-bit element count");
    const auto bits = static_cast<std::uint64_t>(dtype_bits(t.dtype));
    const auto typed_shape = [&] { return shape_text() + " of " + std::string(dtype_text); };
    // Whole-byte dtypes multiply bytes, so only a true 64-bit byte overflow is rejected; sub-byte dtypes
    // (F4, F6) must count bits, and their bits must fill whole bytes.
    std::uint64_t needed = 0;
    if (bits % 8 == 0) {
        if (__builtin_mul_overflow(elements, bits / 8, &needed))
            fail(path, where() + typed_shape() + " overflows 64-bit byte count");
    } else {
        std::uint64_t total_bits = 0;
        if (__builtin_mul_overflow(elements, bits, &total_bits))
            fail(path, where() + typed_shape() + " overflows 64-bit bit count");
        if (total_bits % 8 != 0)
            fail(path, where() + typed_shape() + " is " + std::to_string(total_bits) + " bits, not a whole number of bytes");
        needed = total_bits / 8;
    }

    std::vector<std::uint64_t> offsets;
    if (!get_unsigned_array(*offsets_field, offsets) || offsets.size() != 2)
        fail(path, where() + "field 'data_offsets' must be an array of two non-negative integers");
    t.begin = offsets[0];
    t.end = offsets[1];
    const auto offsets_text = [&] { return "data_offsets " + list_text(offsets); };
    if (t.begin > t.end) fail(path, where() + offsets_text() + " are reversed");
    if (t.bytes() != needed)
        fail(path, where() + offsets_text() + " hold " + std::to_string(t.bytes()) + " bytes but " + typed_shape() +
                       " needs " + std::to_string(needed));
    if (t.end > data_size)
        fail(path, where() + offsets_text() + " end past the " + std::to_string(data_size) + "-byte data block");
    return t;
}

void parse_metadata(std::string_view path, element value, SafetensorsHeader& header) {
    if (value.is_null()) return;  // safetensors 0.8 reads null as "no metadata"
    simdjson::dom::object object;
    if (value.get_object().get(object)) fail(path, "__metadata__ is not an object");
    header.has_metadata = true;
    std::unordered_set<std::string_view> seen;
    for (const auto field : object) {
        if (!seen.insert(field.key).second) fail(path, "duplicate key " + in_quotes(field.key) + " in __metadata__");
        std::string_view text;
        if (field.value.get_string().get(text))
            fail(path, "__metadata__ value for key " + in_quotes(field.key) + " is not a string");
        header.metadata.emplace_back(std::string(field.key), std::string(text));
    }
}

// Sorted by (begin, end), the tensors must tile [0, data_size) with no gap or overlap; zero-byte tensors
// may sit at the same offset as their neighbours.
void check_coverage(std::string_view path, const std::vector<TensorInfo>& tensors, std::uint64_t data_size) {
    std::uint64_t covered = 0;
    const TensorInfo* previous = nullptr;
    for (const TensorInfo& t : tensors) {
        const auto where = [&] { return "tensor " + in_quotes(t.name) + ": data_offsets " + list_text({t.begin, t.end}); };
        if (t.begin > covered && previous == nullptr)
            fail(path, where() + " leave a gap of " + std::to_string(t.begin) + " bytes: the first tensor starts at " +
                           std::to_string(t.begin) + ", the data block starts at 0");
        if (t.begin > covered)
            fail(path, where() + " leave a gap of " + std::to_string(t.begin - covered) + " bytes after tensor " +
                           in_quotes(previous->name) + " (ends at " + std::to_string(covered) + ")");
        if (t.begin < covered)
            fail(path, where() + " overlap tensor " + in_quotes(previous->name) + " (ends at " + std::to_string(covered) + ")");
        covered = t.end;
        previous = &t;
    }
    if (covered != data_size)
        fail(path, "data block is " + std::to_string(data_size) + " bytes but tensors cover " + std::to_string(covered) +
                       " (" + std::to_string(data_size - covered) + " bytes not covered)");
}

SafetensorsHeader build_header(std::string_view path, simdjson::simdjson_result<element> parsed,
                               std::uint64_t header_length, std::uint64_t file_size) {
    element root;
    if (const auto error = parsed.get(root))
        fail(path, std::string("header is not valid JSON (simdjson: ") + simdjson::error_message(error) + ")");
    simdjson::dom::object object;
    if (root.get_object().get(object)) fail(path, "header JSON is not an object");

    SafetensorsHeader header;
    header.path = std::string(path);
    header.file_size = file_size;
    header.header_length = header_length;
    header.data_start = 8 + header_length;
    const std::uint64_t data_size = file_size - header.data_start;
    // simdjson's DOM keeps every duplicate key, so they are caught here.
    std::unordered_set<std::string_view> seen;
    for (const auto field : object) {
        if (!seen.insert(field.key).second) fail(path, "duplicate key " + in_quotes(field.key) + " in header");
        if (field.key == "__metadata__")
            parse_metadata(path, field.value, header);
        else
            header.tensors.push_back(parse_tensor(path, field.key, field.value, data_size));
    }
    std::stable_sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    check_coverage(path, header.tensors, data_size);
    return header;
}

class FileDescriptor {
public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

void pread_exact(const std::string& path, int fd, char* out, std::uint64_t length, std::uint64_t offset) {
    while (length > 0) {
        const ssize_t n = ::pread(fd, out, length, static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(path, "read of " + std::to_string(length) + " bytes at offset " + std::to_string(offset) +
                                  " failed: " + std::strerror(errno));
        if (n == 0) fail(path, "file ended at offset " + std::to_string(offset) + " while reading the header");
        out += n;
        length -= static_cast<std::uint64_t>(n);
        offset += static_cast<std::uint64_t>(n);
    }
}

}  // namespace

std::uint64_t TensorInfo::elements() const {
    std::uint64_t n = 1;
    for (const std::int64_t dim : shape) n *= static_cast<std::uint64_t>(dim);
    return n;
}

std::ptrdiff_t SafetensorsHeader::find(std::string_view name) const {
    for (std::size_t i = 0; i < tensors.size(); ++i)
        if (tensors[i].name == name) return static_cast<std::ptrdiff_t>(i);
    return -1;
}

SafetensorsHeader parse_safetensors_header(std::string_view path, std::string_view json, std::uint64_t header_length,
                                           std::uint64_t file_size) {
    check_lengths(path, header_length, file_size);
    QF_EXPECT(json.size() == header_length, std::string(path) + ": header text is " + std::to_string(json.size()) +
                                                " bytes but the header length is " + std::to_string(header_length));
    simdjson::dom::parser parser;
    return build_header(path, parser.parse(json.data(), json.size(), true), header_length, file_size);
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
    const FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
    const auto file_size = static_cast<std::uint64_t>(st.st_size);
    if (file_size < 8) check_lengths(path, 0, file_size);

    unsigned char prefix[8];
    pread_exact(path, fd.get(), reinterpret_cast<char*>(prefix), 8, 0);
    std::uint64_t header_length = 0;
    for (int i = 7; i >= 0; --i) header_length = header_length << 8 | prefix[i];
    check_lengths(path, header_length, file_size);

    // A padded_string lets simdjson parse in place, without a second copy of a header up to 100 MB.
    simdjson::padded_string json(static_cast<std::size_t>(header_length));
    if (json.data() == nullptr) fail(path, "cannot allocate " + std::to_string(header_length) + " bytes for the header");
    pread_exact(path, fd.get(), json.data(), header_length, 8);
    simdjson::dom::parser parser;
    SafetensorsHeader header = build_header(path, parser.parse(json), header_length, file_size);
    header.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (std::size_t i = 0; i < json.size(); ++i) h = (h ^ static_cast<unsigned char>(json.data()[i])) * 0x100000001B3ull;
    header.header_hash = h;
    return header;
}

const std::string* SafetensorsHeader::metadata_value(std::string_view key) const {
    for (const auto& kv : metadata)
        if (kv.first == key) return &kv.second;
    return nullptr;
}

}  // namespace quantflow
