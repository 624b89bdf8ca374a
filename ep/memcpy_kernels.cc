// MemcpyFromHost / MemcpyToHost for an accelerator's EP, registered through the kernel registry
// (OrtEpApi::CreateKernelRegistry, ORT 1.24+). Without them ONNX Runtime falls back to its own
// copy nodes for a plugin EP and, in a graph like Abs(CPU) -> FastAttention -> Neg(CPU), hands
// the EP's node host memory (checked on ORT 1.30 to 1.32). These copy on the node's stream with
// the device kind's own copy function, whatever the element type.
#include <climits>
#include <vector>

#include "device.h"

namespace fastattn::ep {
namespace {

struct MemcpyKernel : OrtKernelImpl {
  const DevicePlumbing& device;

  explicit MemcpyKernel(const DevicePlumbing& d) : OrtKernelImpl{}, device(d) {
    ort_version_supported = ORT_API_VERSION;
    Compute = ComputeImpl;
    Release = ReleaseImpl;
  }
  static void ORT_API_CALL ReleaseImpl(OrtKernelImpl* self) noexcept { delete static_cast<MemcpyKernel*>(self); }

  static OrtStatus* ORT_API_CALL ComputeImpl(OrtKernelImpl* self, OrtKernelContext* context) noexcept {
    return guarded([&]() -> OrtStatus* {
      const DevicePlumbing& device = static_cast<MemcpyKernel*>(self)->device;
      const OrtValue* input = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetInput(context, 0, &input));
      if (!input) return make_error("Memcpy node of FastAttentionEP: no input");
      OrtTensorTypeAndShapeInfo* info = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().GetTensorTypeAndShape(input, &info));
      TypeShapeInfoPtr owned(info);
      size_t rank = 0;
      FASTATTN_RETURN_IF_ERROR(ort().GetDimensionsCount(info, &rank));
      std::vector<int64_t> dims(rank);
      FASTATTN_RETURN_IF_ERROR(ort().GetDimensions(info, dims.data(), rank));
      OrtValue* output = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetOutput(context, 0, dims.data(), rank, &output));
      // The direction from where the tensors are, not from the op's name.
      void* stream = nullptr;
      FASTATTN_RETURN_IF_ERROR(ort().KernelContext_GetGPUComputeStream(context, &stream));
      return copy_tensor(device, input, output, stream);
    });
  }
};

OrtStatus* ORT_API_CALL create_memcpy_kernel(void* state, const OrtKernelInfo*, OrtKernelImpl** kernel) noexcept {
  return guarded([&]() -> OrtStatus* {
    *kernel = new MemcpyKernel(*static_cast<const DevicePlumbing*>(state));
    return nullptr;
  });
}

// Every fixed-size tensor element type (what ORT's own Memcpy kernels accept).
OrtStatus* all_tensor_types(std::vector<const OrtDataType*>* types) {
  for (ONNXTensorElementDataType t :
       {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8,
        ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
        ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
        ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64,
        ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16}) {
    const OrtDataType* type = nullptr;
    FASTATTN_RETURN_IF_ERROR(ort_ep().GetTensorDataType(t, &type));
    types->push_back(type);
  }
  return nullptr;
}

OrtStatus* add_memcpy_kernel(OrtKernelRegistry* registry, const char* ep_name, const char* op_type, bool to_host,
                             const std::vector<const OrtDataType*>& types, const DevicePlumbing& device) {
  OrtKernelDefBuilder* builder = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort_ep().CreateKernelDefBuilder(&builder));
  OrtKernelDef* def = nullptr;
  OrtStatus* s = [&]() -> OrtStatus* {
    FASTATTN_RETURN_IF_ERROR(ort_ep().KernelDefBuilder_SetOperatorType(builder, op_type));
    FASTATTN_RETURN_IF_ERROR(ort_ep().KernelDefBuilder_SetDomain(builder, ""));
    FASTATTN_RETURN_IF_ERROR(ort_ep().KernelDefBuilder_SetSinceVersion(builder, 1, INT_MAX));
    FASTATTN_RETURN_IF_ERROR(ort_ep().KernelDefBuilder_SetExecutionProvider(builder, ep_name));
    FASTATTN_RETURN_IF_ERROR(to_host ? ort_ep().KernelDefBuilder_SetOutputMemType(builder, 0, OrtMemTypeCPUOutput)
                                     : ort_ep().KernelDefBuilder_SetInputMemType(builder, 0, OrtMemTypeCPUInput));
    FASTATTN_RETURN_IF_ERROR(ort_ep().KernelDefBuilder_AddTypeConstraint(builder, "T", types.data(), types.size()));
    FASTATTN_RETURN_IF_ERROR(ort_ep().KernelDefBuilder_Build(builder, &def));
    return ort_ep().KernelRegistry_AddKernel(registry, def, create_memcpy_kernel,
                                             const_cast<DevicePlumbing*>(&device));  // the kinds are static
  }();
  if (def) ort_ep().ReleaseKernelDef(def);  // the registry keeps its own copy
  ort_ep().ReleaseKernelDefBuilder(builder);
  return s;
}

}  // namespace

OrtStatus* create_memcpy_kernel_registry(const char* ep_name, const DevicePlumbing& device,
                                         OrtKernelRegistry** registry) {
  *registry = nullptr;
  std::vector<const OrtDataType*> types;
  FASTATTN_RETURN_IF_ERROR(all_tensor_types(&types));
  OrtKernelRegistry* r = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort_ep().CreateKernelRegistry(&r));
  OrtStatus* s = add_memcpy_kernel(r, ep_name, "MemcpyFromHost", false, types, device);
  if (!s) s = add_memcpy_kernel(r, ep_name, "MemcpyToHost", true, types, device);
  if (s) {
    ort_ep().ReleaseKernelRegistry(r);
    return s;
  }
  *registry = r;
  return nullptr;
}

}  // namespace fastattn::ep
