// The run of a claimed GroupQueryAttention node (gqa_node.h): ONNX Runtime's shape checks, the
// per-batch lengths from seqlens_k (read on the host; copied back from an accelerator), the KV
// cache (shared past/present buffer, or present = past + new), then the kernel dispatch.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gqa_call.h"

namespace fastattn::ep {
namespace {

// Names in messages, in the schema's order (GqaInput, GqaOutput).
constexpr const char* kInputNames[kGqaNumInputs] = {
    "query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "cos_cache", "sin_cache",
    "position_ids", "attention_bias", "head_sink", "k_scale", "v_scale", "q_norm_weight", "k_norm_weight",
    "query_seqlens"};
constexpr const char* kOutputNames[kGqaNumOutputs] = {"output", "present_key", "present_value", "output_qk"};

}  // namespace

OrtStatus* compute_group_query_attention(const NodeConfig& cfg, const DevicePlumbing& device, int ordinal,
                                         OrtKernelContext* context) noexcept {
  return guarded([&]() -> OrtStatus* {
    const GqaConfig& g = *cfg.gqa;
    auto fail = [&](const std::string& rule) { return make_error(core::node_error(cfg.op_type, cfg.name, rule)); };
    auto s = [](int64_t x) { return std::to_string(x); };
    size_t num_inputs = 0, num_outputs = 0;
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInputCount(context, &num_inputs));
    FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutputCount(context, &num_outputs));
    TensorDesc desc[kGqaNumInputs];
    void* data[kGqaNumInputs] = {};
    const OrtValue* values[kGqaNumInputs] = {};
    for (int i = 0; i < kGqaNumInputs; ++i) {
      const int idx = g.input_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_inputs) continue;
      const OrtValue* value = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInput(context, idx, &value));
      if (!value) continue;
      values[i] = value;
      FASTATTN_RETURN_IF_ERROR(describe(value, &desc[i]));
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(const_cast<OrtValue*>(value), &data[i]));
    }
    const int64_t N = g.num_heads, KV = g.kv_num_heads;
    // The shapes, as ONNX Runtime's GroupQueryAttention checks them.
    const TensorDesc& q = desc[kGqaQuery];
    if (q.rank != 3) return fail("query must be 3D [B, S, hidden]");
    GqaCall c;
    c.dtype = q.dtype;
    c.packed = !desc[kGqaKey].present;
    const int64_t B = q.dims[0], S = q.dims[1];
    const int64_t D = q.dims[2] / (c.packed ? N + 2 * KV : N);
    if (q.dims[2] != D * (c.packed ? N + 2 * KV : N) || D < 1)
      return fail("query hidden size " + s(q.dims[2]) + " is not a multiple of the head count");
    if (c.packed && desc[kGqaValue].present) return fail("value is given without key");
    if (!c.packed) {
      for (int i : {kGqaKey, kGqaValue}) {
        const TensorDesc& x = desc[i];
        if (!x.present || x.rank != 3 || x.dims[0] != B || x.dims[1] != S || x.dims[2] != KV * D)
          return fail(std::string(i == kGqaKey ? "key" : "value") + " must be [B, S, kv_num_heads * head size] = [" +
                      s(B) + ", " + s(S) + ", " + s(KV * D) + "]");
      }
    }
    const bool has_past = desc[kGqaPastKey].present;
    int64_t P = 0;
    if (has_past) {
      for (int i : {kGqaPastKey, kGqaPastValue}) {
        const TensorDesc& x = desc[i];
        if (!x.present || x.rank != 4 || x.dims[0] != B || x.dims[1] != KV || x.dims[3] != D ||
            x.dims[2] != desc[kGqaPastKey].dims[2])
          return fail("past_key and past_value must be [B, kv_num_heads, P, head size]");
      }
      P = desc[kGqaPastKey].dims[2];
    }
    const TensorDesc& sk = desc[kGqaSeqlensK];
    const TensorDesc& tl = desc[kGqaTotalSequenceLength];
    if (!sk.present || sk.dtype != DType::kInt32 || sk.rank != 1 || sk.dims[0] != B)
      return fail("seqlens_k must be int32 [batch]");
    int64_t tl_count = 1;
    for (int64_t d : tl.dims) tl_count *= d;
    if (!tl.present || tl.dtype != DType::kInt32 || tl_count != 1)
      return fail("total_sequence_length must be an int32 scalar");
    // seqlens_k, total_sequence_length and position_ids steer the checks below and the sizes of
    // the outputs, so they are read on the host: on an accelerator they are copied over (one
    // synchronisation of the node's stream) unless ONNX Runtime left them in host memory.
    const LaunchContext launch = device.launch_context(context, ordinal);
    const bool accel = device.accelerator();
    const TensorDesc& pid = desc[kGqaPositionIds];
    std::vector<int32_t> seqlens_copy, total_copy;
    std::vector<int64_t> ids_copy;
    bool copied = false;
    auto host_view = [&](int i, auto& copy, size_t count) -> OrtStatus* {
      using E = typename std::decay_t<decltype(copy)>::value_type;
      const OrtMemoryDevice* m = ort_ep().Value_GetMemoryDevice(values[i]);
      if (!accel || !m || ort_ep().MemoryDevice_GetDeviceType(m) == OrtMemoryInfoDeviceType_CPU) return nullptr;
      copy.resize(count);
      if (count) FASTATTN_RETURN_IF_ERROR(device.copy(ordinal, launch.stream, copy.data(), data[i], count * sizeof(E),
                                                      CopyKind::kDeviceToHost));
      data[i] = copy.data();
      copied = true;
      return nullptr;
    };
    FASTATTN_RETURN_IF_ERROR(host_view(kGqaSeqlensK, seqlens_copy, static_cast<size_t>(B)));
    FASTATTN_RETURN_IF_ERROR(host_view(kGqaTotalSequenceLength, total_copy, 1));
    if (g.do_rotary && pid.present) {
      if (pid.dtype != DType::kInt64) return fail("position_ids must be int64");
      size_t count = 1;
      for (int64_t d : pid.dims) count *= static_cast<size_t>(d);
      FASTATTN_RETURN_IF_ERROR(host_view(kGqaPositionIds, ids_copy, count));
    }
    if (copied) FASTATTN_RETURN_IF_ERROR(device.synchronize(ordinal, launch.stream));
    const int32_t* seqlens_k = static_cast<const int32_t*>(data[kGqaSeqlensK]);
    const int64_t total = *static_cast<const int32_t*>(data[kGqaTotalSequenceLength]);
    const int64_t C = std::max(total, P);  // present length, as ONNX Runtime sizes it
    // First prompt (every past length 0) when S == total_sequence_length, else past = T - S per batch.
    const bool first_prompt = S == total;
    if (!has_past && !first_prompt)
      return fail("a step after the first prompt (S != total_sequence_length) without past_key/past_value");
    std::vector<int32_t> past_len(B), kv_len(B);
    int64_t seq_past = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t T = static_cast<int64_t>(seqlens_k[b]) + 1;
      const int64_t past = !has_past || first_prompt ? 0 : T - S;
      if (T < 1 || T > C) return fail("seqlens_k[" + s(b) + "] + 1 = " + s(T) + " is not in [1, " + s(C) + "]");
      if (past < 0) return fail("seqlens_k[" + s(b) + "] + 1 = " + s(T) + " is less than the sequence length " + s(S));
      if (past > P) return fail("batch " + s(b) + " has " + s(past) + " past rows but past_key holds " + s(P));
      if (past + S > C)
        return fail("batch " + s(b) + ": " + s(past) + " past + " + s(S) + " new rows exceed the cache length " + s(C));
      past_len[b] = static_cast<int32_t>(past);
      kv_len[b] = static_cast<int32_t>(T);
      seq_past = std::max(seq_past, past);
    }
    if (g.do_rotary) {
      const TensorDesc &cs = desc[kGqaCosCache], &sn = desc[kGqaSinCache];
      if (!cs.present || !sn.present || cs.rank != 2 || sn.rank != 2 || cs.dims != sn.dims)
        return fail("cos_cache and sin_cache must both be 2D of one shape");
      if (D % 16 || cs.dims[1] % 8 || 2 * cs.dims[1] > D || cs.dims[1] < 1)
        return fail("rotary needs a head size that is a multiple of 16 and cos_cache dimension 1 a multiple of 8 "
                    "<= head size / 2");
      if (cs.dims[0] < total) return fail("cos_cache dimension 0 is less than total_sequence_length");
      c.cos = data[kGqaCosCache];
      c.sin = data[kGqaSinCache];
      c.rotary_half = cs.dims[1];
    }
    // Rotary positions: position_ids[b, s] after the first prompt, position_ids[0] + s in it (ONNX
    // Runtime reads only the first element there), else the row's place in the cache.
    std::vector<int64_t> positions;
    if (g.do_rotary) {
      const int64_t max_pos = desc[kGqaCosCache].dims[0];
      if (pid.present) {
        if (pid.rank != 2 || pid.dims[0] != B || pid.dims[1] < S) return fail("position_ids must be [B, >= S]");
        const int64_t* ids = static_cast<const int64_t*>(data[kGqaPositionIds]);
        if (first_prompt) {
          if (ids[0] < 0 || ids[0] > max_pos - S) return fail("position_ids base value out of cos/sin cache range");
          positions.resize(B * S);
          for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < S; ++i) positions[b * S + i] = ids[0] + i;
          c.position_ids = positions.data();
          c.position_batch_stride = S;
        } else {
          // ONNX Runtime reads row b at b * S, also when position_ids has more than S columns.
          for (int64_t i = 0; i < B * S; ++i)
            if (ids[i] < 0 || ids[i] >= max_pos) return fail("position_ids value out of range");
          c.position_ids = ids;
          c.position_batch_stride = S;
        }
      } else {
        for (int64_t b = 0; b < B; ++b)
          if (past_len[b] + S > max_pos) return fail("a rotary position is beyond cos_cache");
      }
    }
    const TensorDesc& bias = desc[kGqaAttentionBias];
    if (bias.present) {
      if (bias.rank != 4 || (bias.dims[0] != B && bias.dims[0] != 1) || (bias.dims[1] != N && bias.dims[1] != 1) ||
          bias.dims[2] != S || bias.dims[3] != total)
        return fail("attention_bias must be [B or 1, num_heads or 1, S, total_sequence_length]");
      for (int64_t b = 0; b < B; ++b)
        if (kv_len[b] > total) return fail("seqlens_k[" + s(b) + "] + 1 exceeds total_sequence_length");
      c.bias = data[kGqaAttentionBias];
      for (int d = 0; d < 4; ++d) c.bias_dims[d] = bias.dims[d];
    }
    const TensorDesc& sink = desc[kGqaHeadSink];
    if (sink.present) {
      if (sink.rank != 1 || sink.dims[0] != N) return fail("head_sink must be [num_heads]");
      c.head_sink = data[kGqaHeadSink];
    }

    // Outputs: output [B, S, N*D], present [B, KV, C, D].
    void* out_data[3] = {};
    OrtValue* out_values[3] = {};
    std::shared_ptr<void> device_lengths;
    for (int i = 0; i < 3; ++i) {
      const int idx = g.output_index[i];
      if (idx < 0 || static_cast<size_t>(idx) >= num_outputs) return fail("an output is missing");
      const std::vector<int64_t> dims = i == kGqaOutput ? std::vector<int64_t>{B, S, N * D}
                                                        : std::vector<int64_t>{B, KV, C, D};
      OrtValue* value = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutput(context, idx, dims.data(), dims.size(), &value));
      if (!value) return fail("an output is missing");
      out_values[i] = value;
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorMutableData(value, &out_data[i]));
    }
    c.batch = B;
    c.seq = S;
    c.head_dim = D;
    c.capacity = C;
    c.seq_past = seq_past;
    c.query = data[kGqaQuery];
    c.key = data[kGqaKey];
    c.value = data[kGqaValue];
    c.out = out_data[kGqaOutput];
    c.present_k = out_data[kGqaPresentKey];
    c.present_v = out_data[kGqaPresentValue];
    c.past_len = past_len.data();
    c.kv_len = kv_len.data();
    if (accel) {
      // Every tensor the kernel reads or writes must be in the device's memory; the per-batch
      // lengths (and rotary positions) go over in one copy, freed in stream order after the node.
      for (int i : {kGqaQuery, kGqaKey, kGqaValue, kGqaPastKey, kGqaPastValue, kGqaCosCache, kGqaSinCache,
                    kGqaAttentionBias, kGqaHeadSink})
        if (values[i])
          if (auto why = check_memory(device, ordinal, values[i], "input", kInputNames[i]); !why.empty())
            return fail(why);
      for (int i = 0; i < 3; ++i)
        if (auto why = check_memory(device, ordinal, out_values[i], "output", kOutputNames[i]); !why.empty())
          return fail(why);
      const size_t len_bytes = (static_cast<size_t>(2 * B) * sizeof(int32_t) + 7) / 8 * 8;
      const size_t pos_count = c.position_ids ? static_cast<size_t>(B * S) : 0;
      std::vector<uint8_t> staging(len_bytes + pos_count * sizeof(int64_t));
      std::memcpy(staging.data(), past_len.data(), B * sizeof(int32_t));
      std::memcpy(staging.data() + B * sizeof(int32_t), kv_len.data(), B * sizeof(int32_t));
      for (size_t r = 0; r < pos_count; ++r) {  // row b of the positions at b * S (the stride is S)
        const int64_t b = static_cast<int64_t>(r) / S, i = static_cast<int64_t>(r) % S;
        const int64_t v = c.position_ids[b * c.position_batch_stride + i];
        std::memcpy(staging.data() + len_bytes + r * sizeof(int64_t), &v, sizeof(int64_t));
      }
      FASTATTN_RETURN_IF_ERROR(device.temporary(ordinal, launch.stream, staging.size(), &device_lengths));
      FASTATTN_RETURN_IF_ERROR(device.copy(ordinal, launch.stream, device_lengths.get(), staging.data(), staging.size(),
                                           CopyKind::kHostToDevice));
      char* base = static_cast<char*>(device_lengths.get());
      c.past_len = reinterpret_cast<const int32_t*>(base);
      c.kv_len = reinterpret_cast<const int32_t*>(base) + B;
      if (pos_count) {
        c.position_ids = reinterpret_cast<const int64_t*>(base + len_bytes);
        c.position_batch_stride = S;
      }
    }

    // The KV cache is updated in place in present. Where past is present's own buffer (genai's
    // past_present_share_buffer: the same OrtValue bound as both), nothing moves; else the backend
    // fills present from the past first (valid rows copied, the rest zeroed), as ONNX Runtime does.
    const size_t width = elem_size(gqa_elem_type(c.dtype));
    const size_t row_bytes = static_cast<size_t>(D) * width;
    const size_t present_bytes = static_cast<size_t>(B * KV * C) * row_bytes;
    const size_t past_bytes = static_cast<size_t>(B * KV * P) * row_bytes;
    for (int i : {0, 1}) {
      char* present = static_cast<char*>(i == 0 ? c.present_k : c.present_v);
      const char* past = static_cast<const char*>(has_past ? data[i == 0 ? kGqaPastKey : kGqaPastValue] : nullptr);
      if (past == present) continue;
      if (past && past < present + present_bytes && present < past + past_bytes)
        return fail(std::string(i == 0 ? "past_key and present_key" : "past_value and present_value") +
                    " overlap without being the same buffer");
      (i == 0 ? c.past_k : c.past_v) = past;
      c.past_rows = P;
    }
    AttentionParams p = make_gqa_params(g, c, launch.device);
    std::string rule;
    try {
      rule = attention_forward(p, launch);
    } catch (const std::exception& e) {  // a device failure, named with the node (ORT_FAIL: no quiet CPU rerun)
      return make_error(core::node_error(cfg.op_type, cfg.name, e.what()), ORT_FAIL);
    }
    if (!rule.empty()) return fail(rule);
    return nullptr;
  });
}

}  // namespace fastattn::ep
