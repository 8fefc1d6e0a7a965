#include "pipeline/graph.hpp"

#include <oneapi/tbb/flow_graph.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>

#include "kernels/error.hpp"
#include "pipeline/byte_budget.hpp"
#include "stages/bias_corrector.hpp"
#include "stages/optimizer.hpp"
#include "stages/reader.hpp"
#include "stages/writer.hpp"

namespace quantflow {
namespace {

std::atomic<bool> g_interrupted{false};

void check_interrupt() {
    if (g_interrupted.load(std::memory_order_relaxed)) throw Interrupted();
}

// Everything the node bodies share for one run.
struct RunContext {
    const Plan& plan;
    const MappedFile& input;
    OutputFile& out;
    Backend& backend;
    ByteBudget budget;
    ByteBudget device_budget;
    CalibrationMeans means;
    Progress& progress;
    const RunSettings& settings;
    std::mutex records_mutex;
    std::vector<LayerRecord> records;
};

const TensorInfo& job_tensor(const RunContext& ctx, const TensorJob& job) { return ctx.plan.input.tensors[job.plan->input]; }

void quantize_body(RunContext& ctx, TensorJob& job) {
    check_interrupt();
    if (job.plan->action != Action::Quantize) return;
    const TensorView weight = weight_view(ctx.input, ctx.plan.input, job.plan->input);
    job.held = ctx.backend.hold(job_tensor(ctx, job).name, weight);  // one copy to the GPU for every stage
    // The device has its copy: drop the input pages now (a later read on the host faults them back from the
    // page cache), so resident memory holds codes, not weights, while the GPU works.
    if (job.held) release_job(job, ctx.input, ctx.plan.input);
    quantize_layer(job, job_tensor(ctx, job).name, weight, ctx.backend, ctx.settings.optimizer);
}

void correct_stages(RunContext& ctx, TensorJob& job) {
    const TensorView weight = weight_view(ctx.input, ctx.plan.input, job.plan->input);
    const auto bias_index = job.plan->bias_input;
    if (bias_index != kNoTensor)
        correct_bias(job, weight, tensor_data(ctx.input, ctx.plan.input, bias_index), ctx.plan.input.tensors[bias_index].dtype,
                     ctx.backend, ctx.means);
    if (ctx.settings.quality_samples <= 0) return;
    if (bias_index == kNoTensor) {
        measure_layer(job, job_tensor(ctx, job).name, weight, nullptr, nullptr, ctx.backend, ctx.settings.optimizer,
                      ctx.settings.quality_samples);
        return;
    }
    const TensorInfo& b = ctx.plan.input.tensors[bias_index];
    const TensorView bias{tensor_data(ctx.input, ctx.plan.input, bias_index).data(), b.dtype, 1, b.shape.at(0)};
    const TensorView bias_new{job.bias.data(), b.dtype, 1, b.shape.at(0)};
    measure_layer(job, job_tensor(ctx, job).name, weight, &bias, &bias_new, ctx.backend, ctx.settings.optimizer,
                  ctx.settings.quality_samples);
}

void correct_body(RunContext& ctx, TensorJob& job) {
    if (job.plan->action != Action::Quantize) return;
    correct_stages(ctx, job);
    job.held.reset();  // the accelerator is done with this layer
    ctx.device_budget.release(job.device_bytes);
    job.device_bytes = 0;
}

void write_body(RunContext& ctx, TensorJob& job) {
    write_job(job, ctx.plan.layout, ctx.plan.input, ctx.input, ctx.out);
    release_job(job, ctx.input, ctx.plan.input);
    if (job.plan->action == Action::Quantize) {
        const TensorInfo& t = job_tensor(ctx, job);
        std::lock_guard lock(ctx.records_mutex);
        ctx.records.push_back({t.name, job.plan->spec, t.shape[0], t.shape[1], job.seconds, job.rounding, job.measured, job.quality});
    }
    const std::uint64_t consumed = job.plan->action == Action::Copy ? job.chunk_end - job.chunk_begin : job_tensor(ctx, job).bytes();
    job.quant = {};  // free codes and scales before the budget says they are gone
    job.bias = {};
    job.basis = {};
    ctx.budget.release(job.budget_bytes);
    ctx.progress.advance(consumed, job_tensor(ctx, job).name);
}

// A body that fails wakes the reader before the exception cancels the graph. An error that does not name
// its tensor (a CUDA call that failed, say) gets the tensor's name in front.
template <typename Body>
auto guarded(RunContext& ctx, Body body) {
    return [&ctx, body](JobPtr job) {
        try {
            try {
                body(ctx, *job);
            } catch (const Interrupted&) {
                throw;
            } catch (const Error& e) {
                const std::string& name = job_tensor(ctx, *job).name;
                if (std::string_view(e.what()).find(name) != std::string_view::npos) throw;
                throw Error("tensor '" + name + "': " + e.what(), e.code());
            }
        } catch (...) {
            ctx.budget.cancel();
            ctx.device_budget.cancel();
            throw;
        }
        return job;
    };
}

}  // namespace

void request_interrupt() noexcept { g_interrupted.store(true, std::memory_order_relaxed); }
bool interrupt_requested() noexcept { return g_interrupted.load(std::memory_order_relaxed); }

RunStats run_conversion(const Plan& plan, const MappedFile& input, OutputFile& out, Backend& backend,
                        const RunSettings& settings, Progress& progress) {
    using namespace oneapi::tbb::flow;
    const auto start = std::chrono::steady_clock::now();
    RunSettings run = settings;
    if (!run.optimizer.on_progress)
        run.optimizer.on_progress = [&progress](std::string_view tensor, std::string_view phase, int step, int steps) {
            progress.activity(tensor, phase, step, steps);
        };
    RunContext ctx{plan, input, out, backend, ByteBudget(settings.memory_budget), ByteBudget(settings.gpu_memory_budget),
                   CalibrationMeans(settings.seed, settings.calib_samples), progress, run, {}, {}};
    std::vector<TensorJob> jobs = make_jobs(plan.layers, plan.input, settings.reader_chunk);
    write_header_and_constants(plan.layout, out);

    const std::size_t n = static_cast<std::size_t>(std::max(1, settings.concurrency));
    graph g;
    function_node<JobPtr, JobPtr> quantize(g, n, guarded(ctx, quantize_body));
    function_node<JobPtr, JobPtr> correct(g, n, guarded(ctx, correct_body));
    function_node<JobPtr, JobPtr> write(g, n, guarded(ctx, write_body));
    make_edge(quantize, correct);
    make_edge(correct, write);

    std::exception_ptr reader_error;
    g.reserve_wait();  // keeps wait_for_all() open while the reader thread still feeds the graph
    std::thread reader([&] {
        try {
            for (auto& job : jobs) {
                if (g_interrupted.load() || !ctx.budget.acquire(job.budget_bytes)) break;
                if (!ctx.device_budget.acquire(job.device_bytes)) {
                    ctx.budget.release(job.budget_bytes);
                    break;
                }
                prefetch_job(job, input, plan.input);
                quantize.try_put(std::make_shared<TensorJob>(std::move(job)));
            }
        } catch (...) {
            reader_error = std::current_exception();
        }
        g.release_wait();
    });
    try {
        g.wait_for_all();
    } catch (...) {
        ctx.budget.cancel();
        ctx.device_budget.cancel();
        reader.join();
        throw;
    }
    reader.join();
    if (reader_error) std::rethrow_exception(reader_error);
    check_interrupt();
    progress.finish();
    return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ctx.budget.peak(), jobs.size(),
            std::move(ctx.records)};
}

}  // namespace quantflow
