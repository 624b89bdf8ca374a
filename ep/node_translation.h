// From an OrtNode of the graph to a NodeConfig: com.fastattention::FastAttention (a bad node is
// an error) and ONNX Attention opset 23+ (claimed only where our kernel reproduces it exactly;
// otherwise the reason it stays with another EP).
#pragma once

#include <string>
#include <vector>

#include "compute.h"

namespace fastattn::ep {

struct NodeView {
  std::string name, op_type, domain;
  int since_version = 0;
  std::vector<TensorDesc> inputs;         // absent optional inputs: present == false
  std::vector<std::string> input_names;   // "" where absent
  std::vector<std::string> output_names;  // "" where absent
};

OrtStatus* read_node(const OrtNode* node, NodeView* view);

bool is_fast_attention(const NodeView& v);
bool is_onnx_attention(const NodeView& v);

// cfg.input_index / output_index receive the node's input/output positions, `in` what is known
// of its inputs in the contract's slots.
// Returns "" or the broken rule (the node is invalid: session creation fails).
std::string translate_fast_attention(const OrtNode* node, const NodeView& v, NodeConfig* cfg,
                                     TensorDesc (&in)[core::kNumInputs]);
// Returns "" (claim) or why the node is left to other EPs.
std::string translate_onnx_attention(const OrtNode* node, const NodeView& v, NodeConfig* cfg,
                                     TensorDesc (&in)[core::kNumInputs]);

}  // namespace fastattn::ep
