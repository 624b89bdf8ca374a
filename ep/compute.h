// Runs one attention node on an OrtKernelContext: reads the tensors, checks them against the
// contract, allocates outputs and calls the kernel dispatch with the device's launch context.
// Used by the custom op's kernel (CPU EP) and by the EP's compiled nodes.
#pragma once

#include <memory>
#include <string>

#include "device.h"
#include "ort_contract.h"

namespace fastattn::ep {

struct GqaConfig;  // gqa_node.h

struct NodeConfig {
  std::string op_type;  // for messages: "FastAttention" or "Attention"
  std::string name;
  OpAttributes attrs;
  // Kernel-context index of each contract input/output; -1 where the node has none.
  int input_index[core::kNumInputs] = {-1, -1, -1, -1, -1, -1, -1};
  int output_index[core::kNumOutputs] = {-1, -1, -1};
  // ONNX Attention's bool attn_mask (true = attend) arrives in the attn_bias slot and is turned
  // into an additive 0/-inf bias of the query's type before the kernel runs.
  bool bool_mask_as_bias = false;
  // com.microsoft::GroupQueryAttention nodes: their own inputs, outputs and attributes; such a
  // node runs through compute_group_query_attention (gqa_node.h), not compute_attention.
  std::shared_ptr<const GqaConfig> gqa;
};

// "" when a kernel on device `ordinal` can read value, else why not ("input 'query' is in host
// memory, but the node runs on CUDA device 0: ..."). An accelerator's node must get tensors in its
// device's memory (ORT hands a plugin EP host memory where its Memcpy kernels are missing): refuse
// others by name rather than read a host pointer on the device. Always "" on the CPU.
std::string check_memory(const DevicePlumbing& device, int ordinal, const OrtValue* value, const char* what,
                         const char* name);

OrtStatus* compute_attention(const NodeConfig& cfg, const DevicePlumbing& device, int ordinal,
                             OrtKernelContext* context) noexcept;

}  // namespace fastattn::ep
