// Top-k singular subspaces on the CPU (spec 5.3): the randomized range finder of kernels/sketch_svd.cpp with
// the products read the weight in its file dtype (dense_cpu.cpp) by default, LAPACK gesdd with --full_matrix.
#include <algorithm>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/sketch_svd.hpp"

namespace quantflow {
namespace {

class CpuProducts final : public SketchProducts {
public:
    explicit CpuProducts(const TensorView& w) : w_(w) {}
    void times(const float* x, std::int64_t l, float* y) override { gemm_nn(w_, x, l, y); }
    void times_transposed(const float* y, std::int64_t l, float* z) override { gemm_tn(w_, y, l, z); }

private:
    const TensorView& w_;
};

}  // namespace

LowRank top_k_svd_cpu(std::string_view name, const TensorView& w, const SvdSettings& settings) {
    use_single_threaded_blas();
    if (!settings.exact) {
        CpuProducts products(w);
        return sketch_svd(name, w.rows, w.cols, settings, products);
    }
    LowRank out;
    out.rows = w.rows;
    out.cols = w.cols;
    out.k = std::clamp<std::int64_t>(settings.k, 1, std::min(w.rows, w.cols));
    Matrix a = decode_matrix(w), u, vt;
    host_svd(name, a, out.k, u, out.sigma, vt);
    out.u = std::move(u.data);
    out.v = std::move(vt.data);
    return out;
}

}  // namespace quantflow
