#include "ep.h"

#include <iterator>
#include <memory>
#include <vector>

#include "ep_factory.h"
#include "gqa_node.h"
#include "node_translation.h"

namespace fastattn::ep {
namespace {

// One compiled node: its config, with indices into the fused node's inputs/outputs.
struct ComputeInfo : OrtNodeComputeInfo {
  NodeConfig cfg;
  const DevicePlumbing& device;
  int ordinal;

  ComputeInfo(const DevicePlumbing& d, int o) : OrtNodeComputeInfo{}, device(d), ordinal(o) {
    ort_version_supported = ORT_API_VERSION;
    CreateState = CreateStateImpl;
    Compute = ComputeImpl;
    ReleaseState = ReleaseStateImpl;
  }
  static OrtStatus* ORT_API_CALL CreateStateImpl(OrtNodeComputeInfo* self, OrtNodeComputeContext*,
                                                 void** state) noexcept {
    *state = self;
    return nullptr;
  }
  static OrtStatus* ORT_API_CALL ComputeImpl(OrtNodeComputeInfo* self, void*, OrtKernelContext* context) noexcept {
    auto* info = static_cast<ComputeInfo*>(self);
    if (info->cfg.gqa) return compute_group_query_attention(info->cfg, info->device, info->ordinal, context);
    return compute_attention(info->cfg, info->device, info->ordinal, context);
  }
  static void ORT_API_CALL ReleaseStateImpl(OrtNodeComputeInfo*, void*) noexcept {}
};

// Each node becomes its own fused node: the kernel is the whole computation.
OrtStatus* add_node(OrtEpGraphSupportInfo* support, const OrtNode* node) {
  OrtNodeFusionOptions options{};
  options.ort_version_supported = ORT_API_VERSION;
  return ort_ep().EpGraphSupportInfo_AddNodesToFuse(support, &node, 1, &options);
}

int index_of(const std::vector<std::string>& names, const std::string& name) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<int>(i);
  return -1;
}

}  // namespace

Ep::Ep(const OrtLogger* logger, const EpConfig& config)
    : OrtEp{},
      logger_(logger),
      device_(*config.device),
      ordinal_(config.ordinal),
      claims_nodes_(config.claims_nodes) {
  ort_version_supported = ORT_API_VERSION;
  GetName = GetNameImpl;
  GetCapability = GetCapabilityImpl;
  Compile = CompileImpl;
  ReleaseNodeComputeInfos = ReleaseNodeComputeInfosImpl;
  if (device_.accelerator()) {
    GetKernelRegistry = GetKernelRegistryImpl;
    Sync = SyncImpl;  // io_binding.synchronize_inputs() and friends wait for the device
    // ORT takes the EP's memory device from the first OrtEpDevice it handed us, unless told.
    if (config.device_index != 0) GetDefaultMemoryDevice = GetDefaultMemoryDeviceImpl;
  }
}

Ep::~Ep() {
  if (kernel_registry_) ort_ep().ReleaseKernelRegistry(kernel_registry_);
}

const char* ORT_API_CALL Ep::GetNameImpl(const OrtEp*) noexcept { return core::kEpName; }

OrtStatus* ORT_API_CALL Ep::GetKernelRegistryImpl(OrtEp* this_ptr, const OrtKernelRegistry** registry) noexcept {
  return guarded([&]() -> OrtStatus* {
    auto* ep = static_cast<Ep*>(this_ptr);
    *registry = nullptr;
    std::lock_guard<std::mutex> lock(ep->registry_mutex_);
    if (!ep->kernel_registry_)
      FASTATTN_RETURN_IF_ERROR(create_memcpy_kernel_registry(core::kEpName, ep->device_, &ep->kernel_registry_));
    *registry = ep->kernel_registry_;
    return nullptr;
  });
}

OrtStatus* ORT_API_CALL Ep::SyncImpl(OrtEp* this_ptr) noexcept {
  auto* ep = static_cast<Ep*>(this_ptr);
  return ep->device_.synchronize(ep->ordinal_, nullptr);
}

OrtStatus* ORT_API_CALL Ep::GetDefaultMemoryDeviceImpl(const OrtEp* this_ptr, const OrtMemoryDevice** device) noexcept {
  auto* ep = static_cast<const Ep*>(this_ptr);
  *device = ep->device_.memory_device(ep->ordinal_);
  return nullptr;
}

void Ep::log(OrtLoggingLevel level, const std::string& msg) const {
  if (!logger_) return;
  if (OrtStatus* s = ort().Logger_LogMessage(logger_, level, msg.c_str(), __FILE__, __LINE__, "FastAttentionEP"))
    ort().ReleaseStatus(s);
}

OrtStatus* ORT_API_CALL Ep::GetCapabilityImpl(OrtEp* this_ptr, const OrtGraph* graph,
                                              OrtEpGraphSupportInfo* support) noexcept {
  return guarded([&]() -> OrtStatus* {
    auto* ep = static_cast<Ep*>(this_ptr);
    if (!ep->claims_nodes_) return nullptr;
    size_t n = 0;
    FASTATTN_RETURN_IF_ERROR(ort().Graph_GetNumNodes(graph, &n));
    std::vector<const OrtNode*> nodes(n);
    FASTATTN_RETURN_IF_ERROR(ort().Graph_GetNodes(graph, nodes.data(), n));
    for (const OrtNode* node : nodes) {
      NodeView v;
      FASTATTN_RETURN_IF_ERROR(read_node(node, &v));
      NodeConfig cfg;
      TensorDesc in[core::kNumInputs];
      if (is_fast_attention(v)) {
        // A FastAttention node that breaks the contract is claimed all the same: Compile then fails
        // the session with the rule. (ONNX Runtime only logs an error returned from here and runs
        // the node elsewhere, e.g. with a misspelt attribute that its custom-op path cannot see.)
        if (!translate_fast_attention(node, v, &cfg, in).empty()) {
          FASTATTN_RETURN_IF_ERROR(add_node(support, node));
          continue;
        }
      } else if (is_onnx_attention(v)) {
        if (auto why = translate_onnx_attention(node, v, &cfg, in); !why.empty()) {
          ep->log(ORT_LOGGING_LEVEL_INFO, "Attention node '" + v.name + "' left to other EPs: " + why);
          continue;
        }
      } else if (is_group_query_attention(v)) {
        // Claimed where the device's backend runs the mapped params; else left to ORT's own kernel.
        AttentionParams probe;
        const Device device{ep->device_.kind(), ep->ordinal_};
        std::string why = translate_group_query_attention(node, v, device, &cfg, &probe);
        if (why.empty()) why = supports(probe);
        if (!why.empty()) {
          ep->log(ORT_LOGGING_LEVEL_INFO, "GroupQueryAttention node '" + v.name + "' left to other EPs: " + why);
          continue;
        }
        FASTATTN_RETURN_IF_ERROR(add_node(support, node));
        continue;
      } else {
        continue;
      }
      // What the device's backend cannot run stays with another EP (for FastAttention: ORT's CPU
      // EP through the custom-op domain), with the reason in the verbose log.
      const Device device{ep->device_.kind(), ep->ordinal_};
      if (auto why = supports(core::params_for_support_check(cfg.attrs, in, device)); !why.empty()) {
        ep->log(ORT_LOGGING_LEVEL_INFO, v.op_type + " node '" + v.name + "' left to other EPs: " + why);
        continue;
      }
      FASTATTN_RETURN_IF_ERROR(add_node(support, node));
    }
    return nullptr;
  });
}

OrtStatus* ORT_API_CALL Ep::CompileImpl(OrtEp* this_ptr, const OrtGraph** graphs, const OrtNode** fused_nodes, size_t count,
                                        OrtNodeComputeInfo** infos, OrtNode** ep_context_nodes) noexcept {
  for (size_t i = 0; i < count; ++i) infos[i] = nullptr;
  OrtStatus* status = guarded([&]() -> OrtStatus* {
    for (size_t g = 0; g < count; ++g) {
      size_t n = 0;
      FASTATTN_RETURN_IF_ERROR(ort().Graph_GetNumNodes(graphs[g], &n));
      if (n != 1) return make_error("FastAttentionEP: expected one node per fused graph, got " + std::to_string(n));
      const OrtNode* node = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().Graph_GetNodes(graphs[g], &node, 1));
      NodeView v, fused;
      FASTATTN_RETURN_IF_ERROR(read_node(node, &v));
      FASTATTN_RETURN_IF_ERROR(read_node(fused_nodes[g], &fused));
      auto* ep = static_cast<Ep*>(this_ptr);
      auto info = std::make_unique<ComputeInfo>(ep->device_, ep->ordinal_);
      NodeConfig& cfg = info->cfg;
      TensorDesc in[core::kNumInputs];
      AttentionParams probe;
      const Device device{ep->device_.kind(), ep->ordinal_};
      const std::string why = is_fast_attention(v) ? translate_fast_attention(node, v, &cfg, in)
                              : is_group_query_attention(v)
                                  ? translate_group_query_attention(node, v, device, &cfg, &probe)
                                  : translate_onnx_attention(node, v, &cfg, in);
      if (!why.empty()) return make_error(core::node_error(v.op_type, v.name, why));
      // The fused node lists each distinct value once; find the node's inputs/outputs by name.
      auto remap = [&](int* begin, int* end, const std::vector<std::string>& node_names,
                       const std::vector<std::string>& fused_names) {
        for (int* idx = begin; idx != end; ++idx)
          if (*idx >= 0) *idx = index_of(fused_names, node_names[*idx]);
      };
      remap(std::begin(cfg.input_index), std::end(cfg.input_index), v.input_names, fused.input_names);
      remap(std::begin(cfg.output_index), std::end(cfg.output_index), v.output_names, fused.output_names);
      if (cfg.gqa) {
        auto gqa = std::make_shared<GqaConfig>(*cfg.gqa);
        remap(std::begin(gqa->input_index), std::end(gqa->input_index), v.input_names, fused.input_names);
        remap(std::begin(gqa->output_index), std::end(gqa->output_index), v.output_names, fused.output_names);
        cfg.gqa = gqa;
      }
      infos[g] = info.release();
      if (ep_context_nodes) ep_context_nodes[g] = nullptr;
    }
    return nullptr;
  });
  if (status) {
    for (size_t i = 0; i < count; ++i) {
      delete static_cast<ComputeInfo*>(infos[i]);
      infos[i] = nullptr;
    }
  }
  return status;
}

void ORT_API_CALL Ep::ReleaseNodeComputeInfosImpl(OrtEp*, OrtNodeComputeInfo** infos, size_t count) noexcept {
  for (size_t i = 0; i < count; ++i) delete static_cast<ComputeInfo*>(infos[i]);
}

}  // namespace fastattn::ep
