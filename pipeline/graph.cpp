#include "pipeline/graph.hpp"

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/task_arena.h>

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

// Everything the node bodies share for one run.
struct RunContext {
    const Plan& plan;
    const MappedFile& input;
    OutputFile& out;
    DevicePool& devices;
    ByteBudget budget;
    std::atomic<bool> stop{false};  // the run failed or was cancelled: the reader stops waiting
    CalibrationMeans means;
    Progress& progress;
    const RunSettings& settings;
    std::mutex records_mutex;
    std::vector<LayerRecord> records;
};

void check_cancel(const RunContext& ctx) {
    if (cancelled(ctx.settings)) throw Interrupted();
}

const TensorInfo& job_tensor(const RunContext& ctx, const TensorJob& job) { return ctx.plan.input.tensors[job.plan->input]; }
Backend& job_backend(const RunContext& ctx, const TensorJob& job) { return ctx.devices.backend(job.device); }

void release_device(TensorJob& job) {
    job.held.reset();  // the accelerator is done with this layer
    job.device_lease.reset();
}

// The weight the optimizer and the bias corrector work on: the file's, or job.work: a stored layer's decoded
// values and/or the ConvRot rotation (orthogonal: errors, the SVD's subspaces and learned rounding carry over).
TensorView stage_weight(const RunContext& ctx, const TensorJob& job) {
    if (job.work.empty()) return weight_view(ctx.input, ctx.plan.input, job.plan->input);
    const TensorInfo& t = job_tensor(ctx, job);
    const auto& s = job.plan->stored;
    return {reinterpret_cast<const std::byte*>(job.work.data()), DType::F32, s ? s->rows : t.shape[0], s ? s->cols : t.shape[1]};
}

void quantize_body(RunContext& ctx, TensorJob& job) {
    check_cancel(ctx);
    if (job.plan->action != Action::Quantize) return;
    Backend& backend = job_backend(ctx, job);
    const std::string& name = job_tensor(ctx, job).name;
    if (job.plan->stored) {
        QuantizedTensor stored = read_stored_layer(ctx.plan.input, ctx.input, *job.plan->stored);
        release_job(job, ctx.input, ctx.plan.input);
        if (job.plan->keep_codes) {
            job.quant = std::move(stored);
            return;
        }
        job.work = dequantize(stored);
    }
    job.held = backend.hold(name, stage_weight(ctx, job));  // one copy to the GPU for every stage
    if (is_convrot(job.plan->spec.format)) {
        // The stages read the rotation from now on; an accelerator keeps its own copy of it in job.held.
        job.work = backend.rotate_groups(name, stage_weight(ctx, job), job.plan->spec.block_size, &job.held);
        release_job(job, ctx.input, ctx.plan.input);
    }
    // The device has its copy: drop the input pages now (a later read on the host faults them back from the
    // page cache), so resident memory holds codes, not weights, while the GPU works.
    if (job.held) release_job(job, ctx.input, ctx.plan.input);
    quantize_layer(job, name, stage_weight(ctx, job), backend, ctx.settings.optimizer);
}

void correct_stages(RunContext& ctx, TensorJob& job) {
    Backend& backend = job_backend(ctx, job);
    const TensorView weight = stage_weight(ctx, job);
    const auto bias_index = job.plan->bias_input;
    if (bias_index != kNoTensor)
        correct_bias(job, weight, tensor_data(ctx.input, ctx.plan.input, bias_index), ctx.plan.input.tensors[bias_index].dtype,
                     backend, ctx.means);
    if (ctx.settings.quality_samples <= 0) return;
    if (bias_index == kNoTensor) {
        measure_layer(job, job_tensor(ctx, job).name, weight, nullptr, nullptr, backend, ctx.settings.optimizer,
                      ctx.settings.quality_samples);
        return;
    }
    const TensorInfo& b = ctx.plan.input.tensors[bias_index];
    const TensorView bias{tensor_data(ctx.input, ctx.plan.input, bias_index).data(), b.dtype, 1, b.shape.at(0)};
    const TensorView bias_new{job.bias.data(), b.dtype, 1, b.shape.at(0)};
    measure_layer(job, job_tensor(ctx, job).name, weight, &bias, &bias_new, backend, ctx.settings.optimizer,
                  ctx.settings.quality_samples);
}

void correct_body(RunContext& ctx, TensorJob& job) {
    if (job.plan->action != Action::Quantize || job.plan->keep_codes) return;
    correct_stages(ctx, job);
    release_device(job);
    job.work = {};
}

void write_body(RunContext& ctx, TensorJob& job) {
    write_job(job, ctx.plan.layout, ctx.plan.input, ctx.input, ctx.out);
    release_job(job, ctx.input, ctx.plan.input);
    if (job.plan->action == Action::Quantize) {
        const TensorInfo& t = job_tensor(ctx, job);
        std::lock_guard lock(ctx.records_mutex);
        ctx.records.push_back({t.name, job.plan->spec, t.shape[0], t.shape[1], job.seconds, ctx.devices.name(job.device),
                               job.rounding, job.measured, job.quality});
    }
    const std::uint64_t consumed = job.plan->action == Action::Copy ? job.chunk_end - job.chunk_begin : job_tensor(ctx, job).bytes();
    job.quant = {};  // free codes and scales before the budget says they are gone
    job.bias = {};
    job.basis = {};
    ctx.budget.release(job.budget_bytes);
    ctx.progress.advance(consumed, job_tensor(ctx, job).name);
}

void stop_run(RunContext& ctx) {
    ctx.stop = true;
    ctx.budget.cancel();
    ctx.devices.wake();
}

// An error that does not name its tensor (a CUDA call that failed, say) gets the tensor's name in front, and
// with several devices (or a GPU) the device's name too. A failed job gives its device budget back at once
// (the jobs the cancelled graph drops give theirs back as they go); the failure stops the reader.
template <typename Body>
auto guarded(RunContext& ctx, Body body) {
    return [&ctx, body](JobPtr job) {
        try {
            try {
                // Isolated: a host parallel_for inside a stage waits by running its own chunks, never another
                // job's stage on this thread (that job would run nested, on this thread's GPU and stack).
                oneapi::tbb::this_task_arena::isolate([&] { body(ctx, *job); });
            } catch (const Interrupted&) {
                throw;
            } catch (const Error& e) {
                const std::string& name = job_tensor(ctx, *job).name;
                const std::string& device = ctx.devices.name(job->device);
                const std::string_view what = e.what();
                const bool show_device = job->plan->action == Action::Quantize && (ctx.devices.size() > 1 || device != "cpu") &&
                                         what.find(device) == std::string_view::npos;
                std::string message = "tensor '" + name + "'" + (show_device ? " on " + device : "") + ": " + e.what();
                if (what.find(name) != std::string_view::npos) message = (show_device ? device + ": " : "") + std::string(what);
                throw Error(message, e.code());
            }
        } catch (...) {
            release_device(*job);
            stop_run(ctx);
            throw;
        }
        return job;
    };
}

}  // namespace

RunStats run_conversion(const Plan& plan, const MappedFile& input, OutputFile& out, DevicePool& devices,
                        const RunSettings& settings, Progress& progress) {
    using namespace oneapi::tbb::flow;
    QF_EXPECT(devices.budget_set(), "run_conversion: the device pool has no budget yet");
    const auto start = std::chrono::steady_clock::now();
    RunSettings run = settings;
    if (!run.optimizer.on_progress)
        run.optimizer.on_progress = [&progress](std::string_view tensor, std::string_view phase, int step, int steps) {
            progress.activity(tensor, phase, step, steps);
        };
    RunContext ctx{plan,     input, out, devices, ByteBudget(settings.memory_budget), {}, CalibrationMeans(settings.seed, settings.calib_samples),
                   progress, run,   {},  {}};
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
                if (cancelled(settings) || ctx.stop.load() || !ctx.budget.acquire(job.budget_bytes)) break;
                if (job.plan->action == Action::Quantize) {
                    const auto device = devices.acquire(job.device_bytes, ctx.stop);
                    if (!device) {
                        ctx.budget.release(job.budget_bytes);
                        break;
                    }
                    job.device = *device;
                    job.device_lease = std::make_unique<DeviceLease>(devices, *device, job.device_bytes);
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
        stop_run(ctx);
        reader.join();
        throw;
    }
    reader.join();
    if (reader_error) std::rethrow_exception(reader_error);
    check_cancel(ctx);
    progress.finish();
    return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ctx.budget.peak(), jobs.size(),
            std::move(ctx.records)};
}

RunStats run_conversion(const Plan& plan, const MappedFile& input, OutputFile& out, Backend& backend,
                        const RunSettings& settings, Progress& progress) {
    // A pool that does not own the caller's backend.
    DevicePool one({std::shared_ptr<Backend>(&backend, [](Backend*) {})});
    one.set_budget(settings.gpu_memory_budget);
    return run_conversion(plan, input, out, one, settings, progress);
}

}  // namespace quantflow
