// onnxruntime's com.microsoft::GroupQueryAttention (as onnxruntime-genai's model builder emits
// it) on FastAttentionEP: reading and validating a node into a GqaConfig (claimed only where the
// kernel reproduces ONNX Runtime's own CPU kernel exactly; otherwise the reason it stays with
// another EP), and the run: packed or separate Q/K/V as strided views, the KV cache updated in
// place (the shared past/present buffer of genai, or present = past + new), per-batch past and
// key lengths from seqlens_k, rotary, local window, softcap, attention_bias, smooth_softmax and
// head_sink.
#pragma once

#include <string>

#include "compute.h"

namespace fastattn::ep {

struct NodeView;

// GroupQueryAttention's inputs and outputs, in the schema's order (onnxruntime 1.32).
enum GqaInput : int {
  kGqaQuery = 0, kGqaKey, kGqaValue, kGqaPastKey, kGqaPastValue, kGqaSeqlensK, kGqaTotalSequenceLength, kGqaCosCache,
  kGqaSinCache, kGqaPositionIds, kGqaAttentionBias, kGqaHeadSink, kGqaKScale, kGqaVScale, kGqaQNormWeight,
  kGqaKNormWeight, kGqaQuerySeqlens, kGqaNumInputs
};
enum GqaOutput : int { kGqaOutput = 0, kGqaPresentKey, kGqaPresentValue, kGqaOutputQk, kGqaNumOutputs };

struct GqaConfig {
  int64_t num_heads = 0, kv_num_heads = 0;
  float scale = 0.f;  // 0: 1/sqrt(head size)
  float softcap = 0.f;
  int64_t local_window_size = -1;  // keys a row sees (itself included); -1: all
  bool do_rotary = false, rotary_interleaved = false, smooth_softmax = false;
  // Kernel-context index of each input/output; -1 where the node has none.
  int input_index[kGqaNumInputs];
  int output_index[kGqaNumOutputs];
  GqaConfig() {
    for (int& i : input_index) i = -1;
    for (int& i : output_index) i = -1;
  }
};

bool is_group_query_attention(const NodeView& v);

// Returns "" (claim) or why the node is left to other EPs. On "", cfg->gqa is set (indices are the
// node's own input/output positions) and *probe holds the params the device's backend is asked
// about (sizes unknown at session creation are 0, present tensors have placeholder pointers).
std::string translate_group_query_attention(const OrtNode* node, const NodeView& v, Device device, NodeConfig* cfg,
                                            AttentionParams* probe);

// The run of a claimed node (cfg.gqa set).
OrtStatus* compute_group_query_attention(const NodeConfig& cfg, const DevicePlumbing& device, int ordinal,
                                         OrtKernelContext* context) noexcept;

}  // namespace fastattn::ep
