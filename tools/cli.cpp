#include "tools/cli.hpp"

#include <boost/program_options.hpp>

#include <cstdlib>
#include <map>
#include <sstream>

#include "kernels/error.hpp"
#include "pipeline/profiles.hpp"

namespace po = boost::program_options;

namespace quantflow {
namespace {

constexpr const char* kModelFlags[] = {"t5xxl", "distillation_large", "distillation_small", "nerf_large", "nerf_small",
                                       "radiance", "wan", "qwen", "hunyuan", "zimage_l", "zimage_s"};

std::string dashed(std::string s) {
    for (auto& c : s)
        if (c == '_') c = '-';
    return s;
}

// "--block_size=64" -> "--block-size=64": one spelling for Boost, both for the user.
std::vector<std::string> normalise(int argc, char** argv, int first) {
    std::vector<std::string> args;
    for (int i = first; i < argc; ++i) {
        std::string a = argv[i];
        if (a.rfind("--", 0) == 0) {
            const auto eq = a.find('=');
            a = dashed(a.substr(0, eq)) + (eq == std::string::npos ? "" : a.substr(eq));
        }
        args.push_back(a);
    }
    return args;
}

const char* kUsageHead =
    "quantflow " QF_VERSION " - convert .safetensors checkpoints to FP8 / INT8 for ComfyUI\n\n"
    "usage:\n"
    "  quantflow [convert] -i IN.safetensors [-o OUT.safetensors] [options]\n"
    "  quantflow batch INPUTS... --out-dir DIR [--resume] [--shard I/N] [--manifest M.json] [options]\n"
    "  quantflow plan -i IN.safetensors [options] [--json]     dry run: decisions, layout, memory; writes nothing\n"
    "  quantflow inspect FILE.safetensors [--json]             validate a file, show dtypes, formats, metadata\n"
    "  quantflow compare ORIGINAL QUANTIZED [--k 16] [--json]  per-layer error of a quantized file (any quantflow or\n"
    "                                                          reference output) and whether ComfyUI loads it;\n"
    "                                                          streams within --memory-budget like convert\n"
    "  quantflow decode QUANTIZED -o OUT.safetensors           F32 values of its float8/mxfp8/nvfp4 layers (stored shape)\n\n"
    "examples:\n"
    "  quantflow -i flux1-dev.safetensors --comfy_quant --simple\n"
    "  quantflow -i wan2.1_14b.safetensors --comfy_quant --wan --memory-budget 4GiB -o wan_fp8.safetensors\n"
    "  quantflow -i t5xxl.safetensors --comfy_quant --t5xxl --int8 --block_size 128\n"
    "  quantflow plan -i model.safetensors --comfy_quant --heur --json\n"
    "  quantflow compare model.safetensors model_fp8.safetensors --json\n"
    "  quantflow batch 'models/*.safetensors' --out-dir fp8/ --comfy_quant --resume --report night.json\n\n"
    "Every flag accepts both spellings: --block_size and --block-size.\n"
    "exit codes: 0 ok, 1 conversion failed (bad input, I/O, numerics; batch: every file failed), 2 bad command line,\n"
    "  3 batch: some files failed, 130 interrupted\n";

po::options_description make_options(Options& o, bool& help, bool& version) {
    po::options_description ref("reference-compatible options");
    ref.add_options()
        ("input,i", po::value(&o.input), "input .safetensors file")
        ("output,o", po::value(&o.output), "output file (default: the reference's name, next to the input)")
        ("comfy-quant", po::bool_switch(&o.comfy_quant), "write ComfyUI comfy_quant format (else legacy scale_weight)")
        ("int8", po::bool_switch(&o.int8), "INT8 instead of FP8 (block-wise unless --scaling_mode tensor|row)")
        ("nvfp4", po::bool_switch(&o.nvfp4), "NVFP4: E2M1 in blocks of 16, E4M3 block scales, FP32 global scale (needs --comfy_quant)")
        ("mxfp8", po::bool_switch(&o.mxfp8), "MXFP8: E4M3 in blocks of 32, E8M0 block scales (needs --comfy_quant)")
        ("e5m2", po::bool_switch(&o.e5m2), "float8_e5m2 tensor-wise instead of float8_e4m3fn (quantflow's flag; needs --comfy_quant)")
        ("convrot", po::bool_switch(&o.convrot), "with --int8: rotate each group of input columns by a Hadamard matrix (ConvRot), per-row INT8 scales")
        ("convrot-group-size", po::value(&o.convrot_group_size), "ConvRot group: a power of 4 dividing the input width (default 256)")
        ("save-quant-metadata", po::bool_switch(&o.save_quant_metadata),
         "also write every layer's comfy_quant object into the header's _quantization_metadata (ComfyUI reads it first)")
        ("layer-config", po::value(&o.layer_config),
         "FILE.json of regex -> {format, ...} per layer (the first match wins), or PROFILE:NAME, a map a model profile "
         "carries (wan:attention_fp8_ffn_nvfp4)")
        ("fullmatch", po::bool_switch(&o.fullmatch), "--layer-config patterns must match the whole layer name")
        ("custom-layers", po::value(&o.custom_layers), "regex of layers quantized to --custom_type instead")
        ("custom-type", po::value(&o.custom_type), "format of --custom_layers: fp8, int8, e5m2, mxfp8, nvfp4, w4a4 or a comfy_quant name")
        ("fallback", po::value(&o.fallback), "format for layers the chosen one cannot hold (default: fp8 or int8 tensor-wise)")
        ("convert-fp8-scaled", po::bool_switch(), "re-wrap an fp8_scaled (or any quantized) file as comfy_quant: codes and scales kept")
        ("convert-int8-scaled", po::bool_switch(), "the same for legacy INT8 scale_weight files")
        ("w4a4", po::bool_switch(&o.w4a4), "convrot_w4a4: ConvRot-rotated INT4 in [-7, 7], per-row scales (quantflow's flag; needs --comfy_quant)")
        ("kernel-backend", po::value(&o.kernel_backend), "INT8 scale layout: blockwise (bs x bs) | lodewise (1 x bs)")
        ("scaling-mode", po::value<std::string>(), "tensor | row | block (1 x bs groups) | block2d (bs x bs tiles)")
        ("block-size", po::value(&o.block_size), "block / group size (default 64)")
        ("simple", po::bool_switch(&o.simple), "round to nearest only (no SVD, no optimizer)")
        ("optimizer", po::value(&o.optimizer), "original | adamw | radam")
        ("num-iter", po::value(&o.num_iter), "optimizer iterations (default 500)")
        ("lr", po::value(&o.lr), "initial learning rate (default 0.01)")
        ("top-p", po::value(&o.top_p), "fraction of singular components (default 0.01)")
        ("min-k", po::value(&o.min_k), "minimum components (default 1)")
        ("max-k", po::value(&o.max_k), "maximum components (default 16)")
        ("full-matrix", po::bool_switch(&o.full_matrix), "exact SVD instead of randomized")
        ("calib-samples", po::value(&o.calib_samples), "calibration rows for bias correction (default 3072)")
        ("manual-seed", po::value(&o.manual_seed), "-1 draws a seed and prints it; any other value is reproducible")
        ("heur", po::bool_switch(&o.heur), "skip layers with poor shapes (spec 4.3)")
        ("full-precision-matrix-mult", po::bool_switch(&o.full_precision_matrix_mult), "mark every layer full_precision_matrix_mult")
        ("input-scale", po::bool_switch(&o.input_scale), "FP8 comfy: write input_scale = 1.0");
    for (const char* flag : kModelFlags)
        ref.add_options()(dashed(flag).c_str(), po::bool_switch(), ("model filter profile " + std::string(flag)).c_str());

    po::options_description own("quantflow options");
    own.add_options()
        ("model", po::value(&o.models)->composing(), "model filter profile NAME or FILE.json (repeatable)")
        ("profile", po::value(&o.profile), "hardware profile NAME (cpu, gpu-8gb, gpu-24gb, gpu-80gb, gpu-node) or FILE.json")
        ("device", po::value(&o.device), "auto | cpu | cuda | cuda:N")
        ("devices", po::value(&o.devices), "GPUs to spread the layers (and batch files) over: all | 0,1,...")
        ("memory-budget", po::value<std::string>(), "bytes of tensors in flight, e.g. 256MiB, 4GiB")
        ("threads", po::value(&o.threads), "CPU threads (0 = all cores)")
        ("progress", po::value(&o.progress), "auto | bar | plain | none")
        ("report", po::value(&o.report), "write a JSON report of the run")
        ("exclude-layers", po::value(&o.exclude_layers), "regex: matching layers keep their original dtype")
        ("bias-correction", po::value<std::string>(), "on | off (default on)")
        ("rounding-aware", po::value<std::string>(),
         "on | off: after learned rounding, move single codes where that lowers the projected error (default on;\n"
         "off reproduces the reference's result)")
        ("rounding-budget", po::value<std::string>(),
         "PERCENT: Frobenius error the rounding-aware finish may add to ||W_hat - W|| (default 0.01)")
        ("rounding-effort", po::value<std::string>(),
         "normal | thorough: thorough searches 8x the candidate moves (projected error ~0.66x normal's on\n"
         "structured weights, ~2.5x the CPU time)")
        ("keep-metadata", po::value<std::string>(), "on | off: keep the input's __metadata__ (default on)")
        ("overwrite", po::bool_switch(&o.overwrite), "replace an existing output file")
        ("json", po::bool_switch(&o.json), "plan / inspect / compare: print JSON")
        ("out-dir", po::value(&o.out_dir), "batch: output directory (outputs named as the reference names them)")
        ("recursive", po::bool_switch(&o.recursive), "batch: look for .safetensors files in subdirectories too")
        ("manifest", po::value(&o.manifest), "batch: JSON list of inputs with per-file overrides")
        ("resume", po::bool_switch(&o.resume), "batch: skip outputs that are complete for the same input and options")
        ("shard", po::value(&o.shard), "batch: I/N, take the I-th (0-based) of N deterministic parts of the inputs")
        ("keep-going", po::value<std::string>(), "batch: on | off, go on after a failed file (default on)")
        ("concurrent-files", po::value(&o.concurrent_files), "batch: files converted at once (default: hardware profile)")
        ("k", po::value(&o.compare_k), "compare: singular components of the projected error (default 16)")
        ("samples", po::value(&o.compare_samples), "compare: Gaussian test inputs for the output error (default 64)")
        ("help,h", po::bool_switch(&help), "this help")
        ("version", po::bool_switch(&version), "print the version");
    po::options_description all;
    all.add(ref).add(own);
    return all;
}

bool on_off(const po::variables_map& vm, const char* key, bool fallback) {
    if (!vm.count(key)) return fallback;
    const auto v = vm[key].as<std::string>();
    if (v == "on") return true;
    if (v == "off") return false;
    throw Error("--" + std::string(key) + " takes on or off, not '" + v + "'", ExitCode::kUsage);
}

}  // namespace

namespace {

// Boost 1.74 replaces each "%value%", "%option%", ... in its message until none is left, so a value or option
// name that itself holds "%value%" made what() loop forever (fuzz/fuzz_manifest, manifest-timeout-41d093fb).
// Every '%' the user typed is shown as "%25" before the message is built.
std::string boost_message(po::error& e) {
    struct Access : po::error_with_option_name {
        static std::map<std::string, std::string>& substitutions(po::error_with_option_name& x) {
            return x.*(&Access::m_substitutions);
        }
    };
    if (auto* named = dynamic_cast<po::error_with_option_name*>(&e))
        for (auto& [key, value] : Access::substitutions(*named))
            for (std::size_t at = value.find('%'); at != std::string::npos; at = value.find('%', at + 3)) value.replace(at, 1, "%25");
    return e.what();
}

// The command line's options as Boost sees them, with the original tokens of each (for batch overrides).
struct TokenParse {
    std::vector<std::string> files;
    std::vector<std::pair<std::string, std::vector<std::string>>> groups;  // option key, its tokens
};

TokenParse parse_tokens(const std::vector<std::string>& tokens, Options& o, bool& help, bool& version, std::string& help_text) {
    auto desc = make_options(o, help, version);
    po::options_description with_files = desc;
    std::vector<std::string> files;
    with_files.add_options()("files", po::value(&files)->composing(), "");
    po::positional_options_description positional;
    positional.add("files", -1);
    po::variables_map vm;
    TokenParse out;
    try {
        const po::parsed_options parsed = po::command_line_parser(tokens).options(with_files).positional(positional).run();
        for (const auto& opt : parsed.options)
            if (opt.position_key < 0) out.groups.emplace_back(opt.string_key, opt.original_tokens);
        po::store(parsed, vm);
        po::notify(vm);
    } catch (po::error& e) {
        throw Error(boost_message(e) + " (see quantflow --help)", ExitCode::kUsage);
    }
    std::ostringstream text;
    text << kUsageHead << "\n" << desc;
    help_text = text.str();
    if (vm.count("scaling-mode")) o.scaling_mode = vm["scaling-mode"].as<std::string>();
    if (vm.count("memory-budget")) o.memory_budget = parse_size(vm["memory-budget"].as<std::string>(), "--memory-budget");
    o.bias_correction = on_off(vm, "bias-correction", true);
    o.keep_metadata = on_off(vm, "keep-metadata", true);
    o.rounding_aware = on_off(vm, "rounding-aware", true);
    if (vm["convert-fp8-scaled"].as<bool>() || vm["convert-int8-scaled"].as<bool>()) {
        // The reference's format migration: comfy_quant out, every stored layer's codes and scales kept.
        o.convert_scaled = true;
        o.comfy_quant = true;
        o.simple = true;
    }
    o.keep_going = on_off(vm, "keep-going", true);
    for (const char* flag : kModelFlags)
        if (vm[dashed(flag)].as<bool>()) o.model_flags.emplace_back(flag);
    if (o.threads < 0) throw Error("--threads must be 0 (all cores) or more", ExitCode::kUsage);
    if (vm.count("rounding-effort")) {
        const std::string effort = vm["rounding-effort"].as<std::string>();
        if (effort != "normal" && effort != "thorough")
            throw Error("--rounding-effort '" + effort + "' is not normal or thorough", ExitCode::kUsage);
        o.rounding_thorough = effort == "thorough";
    }
    if (vm.count("rounding-budget")) {
        const std::string text = vm["rounding-budget"].as<std::string>();
        char* end = nullptr;
        o.rounding_budget = std::strtod(text.c_str(), &end);
        o.rounding_budget_given = true;
        if (text.empty() || *end != '\0' || !(o.rounding_budget >= 0 && o.rounding_budget <= 10))
            throw Error("--rounding-budget '" + text + "' is not a percentage between 0 and 10", ExitCode::kUsage);
    }
    out.files = std::move(files);
    return out;
}

std::string token_key(const std::string& token) {
    std::string t = token.substr(token.rfind('-', 1) == 1 ? 2 : 0);
    return dashed(t.substr(0, t.find('=')));
}

}  // namespace

ParsedCommand parse_command_line(int argc, char** argv) {
    ParsedCommand parsed;
    int first = 1;
    if (argc > 1) {
        const std::string sub = argv[1];
        if (sub == "convert") parsed.command = Command::Convert, first = 2;
        else if (sub == "plan") parsed.command = Command::Plan, first = 2;
        else if (sub == "inspect") parsed.command = Command::Inspect, first = 2;
        else if (sub == "compare") parsed.command = Command::Compare, first = 2;
        else if (sub == "decode") parsed.command = Command::Decode, first = 2;
        else if (sub == "batch") parsed.command = Command::Batch, first = 2;
        else if (!sub.empty() && sub[0] != '-')
            throw Error("unknown command '" + sub + "' (commands: convert, batch, plan, inspect, compare, decode; see --help)",
                        ExitCode::kUsage);
    }
    bool help = false, version = false;
    Options& o = parsed.options;
    const TokenParse tp = parse_tokens(normalise(argc, argv, first), o, help, version, parsed.help_text);
    parsed.files = tp.files;
    for (const auto& [key, tokens] : tp.groups) parsed.option_groups.emplace_back(key, tokens);
    if (help) parsed.command = Command::Help;
    if (version) parsed.command = Command::Version;
    if (help || version) return parsed;

    if (parsed.command == Command::Inspect) {
        if (parsed.files.empty() && !o.input.empty()) parsed.files.push_back(o.input);
        if (parsed.files.empty()) throw Error("inspect needs a file: quantflow inspect FILE.safetensors", ExitCode::kUsage);
        return parsed;
    }
    if (parsed.command == Command::Compare) {
        if (parsed.files.size() != 2)
            throw Error("compare needs two files: quantflow compare ORIGINAL.safetensors QUANTIZED.safetensors", ExitCode::kUsage);
        if (o.compare_k < 1) throw Error("--k must be 1 or more", ExitCode::kUsage);
        if (o.compare_samples < 1) throw Error("--samples must be 1 or more", ExitCode::kUsage);
        return parsed;
    }
    if (parsed.command == Command::Decode) {
        if (parsed.files.size() != 1 || o.output.empty())
            throw Error("decode needs one file and -o: quantflow decode QUANTIZED.safetensors -o DECODED.safetensors", ExitCode::kUsage);
        return parsed;
    }
    if (parsed.command == Command::Batch) {
        if (!o.input.empty()) parsed.files.push_back(o.input);
        if (parsed.files.empty() && o.manifest.empty())
            throw Error("batch needs inputs: files, globs, directories or --manifest FILE.json (see --help)", ExitCode::kUsage);
        if (o.out_dir.empty()) throw Error("batch needs --out-dir DIR", ExitCode::kUsage);
        if (!o.output.empty()) throw Error("batch writes into --out-dir; -o is for convert (per-file names go in the manifest)",
                                           ExitCode::kUsage);
        return parsed;
    }
    if (!parsed.files.empty())
        throw Error("unexpected argument '" + parsed.files[0] + "' (the input goes after -i)", ExitCode::kUsage);
    if (o.input.empty()) throw Error("missing -i/--input (see quantflow --help)", ExitCode::kUsage);
    return parsed;
}

Options options_with_overrides(const ParsedCommand& base, const std::vector<std::string>& overrides) {
    std::vector<std::string> removed;
    for (const auto& t : overrides) removed.push_back(token_key(t[0] == '!' ? t.substr(1) : t));
    std::vector<std::string> tokens;
    for (const auto& [key, group] : base.option_groups) {
        if (std::find(removed.begin(), removed.end(), key) != removed.end()) continue;
        tokens.insert(tokens.end(), group.begin(), group.end());
    }
    for (const auto& t : overrides) {
        if (t[0] == '!') continue;
        const auto eq = t.find('=');
        tokens.push_back(dashed(t.substr(0, eq)) + (eq == std::string::npos ? "" : t.substr(eq)));
    }
    Options o;
    bool help = false, version = false;
    std::string text;
    const TokenParse tp = parse_tokens(tokens, o, help, version, text);
    if (!tp.files.empty()) throw Error("override '" + tp.files[0] + "' is not an option", ExitCode::kUsage);
    return o;
}

}  // namespace quantflow
