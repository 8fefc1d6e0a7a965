// Top-k singular subspaces on the CPU (spec 5.3): by default the randomized SVD of kernels/sketch_svd.cpp, its
// products reading the weight in its file dtype (dense_cpu.cpp; bf16 weights on AMX tiles where the CPU has them,
// amx_products_cpu.hpp); LAPACK gesdd with --full_matrix.
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/amx_products_cpu.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/sketch_svd.hpp"

namespace quantflow {
namespace {

class CpuPanels final : public SketchPanels {
public:
    CpuPanels(const TensorView& w, std::int64_t l) : w_(w), l_(l), y_(w.rows, l), z_(w.cols, l), amx_(amx_usable() && amx_fits(w)) {}
    void set(SketchPanel p, const float* host) override { std::copy_n(host, panel(p).data.size(), panel(p).data.data()); }
    void get(SketchPanel p, float* host) override { std::copy(panel(p).data.begin(), panel(p).data.end(), host); }
    void multiply(SketchPanel to) override {
        if (to == SketchPanel::Left) (amx_ ? gemm_nn_amx : gemm_nn)(w_, z_.data.data(), l_, y_.data.data());
        else (amx_ ? gemm_tn_amx : gemm_tn)(w_, y_.data.data(), l_, z_.data.data());
    }
    void gram(SketchPanel p, double* g) override {
        const Matrix& a = panel(p);
        std::vector<double> d(a.data.begin(), a.data.end());
        const auto l = static_cast<int>(l_);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, l, static_cast<int>(a.rows), 1.0, d.data(), l, 0.0, g, l);
        for (std::int64_t i = 0; i < l_; ++i)
            for (std::int64_t j = 0; j < i; ++j) g[i * l_ + j] = g[j * l_ + i];
    }
    void right_multiply(SketchPanel p, const float* r) override {
        Matrix& a = panel(p);
        Matrix out(a.rows, l_);
        const auto l = static_cast<int>(l_);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(a.rows), l, l, 1.0f, a.data.data(), l, r, l, 0.0f,
                    out.data.data(), l);
        a = std::move(out);
    }

private:
    Matrix& panel(SketchPanel p) { return p == SketchPanel::Left ? y_ : z_; }
    const TensorView& w_;
    std::int64_t l_;
    Matrix y_, z_;
    bool amx_;  // bf16 weights on Intel AMX tiles (amx_products_cpu.hpp)
};

}  // namespace

LowRank top_k_svd_cpu(std::string_view name, const TensorView& w, const SvdSettings& settings) {
    use_single_threaded_blas();
    if (!settings.exact) {
        CpuPanels panels(w, sketch_columns(w.rows, w.cols, settings));
        return sketch_svd(name, w.rows, w.cols, settings, panels);
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
