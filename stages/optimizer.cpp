#include "stages/optimizer.hpp"

namespace quantflow {

void quantize_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, Backend& backend) {
    job.quant = backend.quantize(tensor_name, weight, job.plan->spec);
}

}  // namespace quantflow
