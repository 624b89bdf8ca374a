// Runs one attention node on an OrtKernelContext: reads the tensors, checks them against the
// contract, allocates outputs and calls the CPU kernel on ORT's intra-op thread pool.
// Used by the custom op's kernel and by the EP's compiled nodes.
#pragma once

#include <string>

#include "op_contract.h"
#include "ort_api.h"

namespace fastattn::ep {

struct NodeConfig {
  std::string op_type;  // for messages: "FastAttention" or "Attention"
  std::string name;
  OpAttributes attrs;
  // Kernel-context index of each contract input/output; -1 where the node has none.
  int input_index[kNumInputs] = {-1, -1, -1, -1, -1, -1, -1};
  int output_index[kNumOutputs] = {-1, -1, -1};
  // ONNX Attention's bool attn_mask (true = attend) arrives in the attn_bias slot and is turned
  // into an additive 0/-inf bias of the query's type before the kernel runs.
  bool bool_mask_as_bias = false;
};

OrtStatus* compute_attention(const NodeConfig& cfg, OrtKernelContext* context) noexcept;

}  // namespace fastattn::ep
