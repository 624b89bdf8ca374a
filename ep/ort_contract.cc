#include "ort_contract.h"

#include <vector>

namespace fastattn::ep {
namespace {

constexpr std::pair<ONNXTensorElementDataType, DType> kTypes[] = {
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, DType::kFloat32},   {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, DType::kFloat16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, DType::kBFloat16}, {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, DType::kFloat64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, DType::kBool},       {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, DType::kInt8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, DType::kUInt8},     {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, DType::kInt16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, DType::kUInt16},   {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, DType::kInt32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, DType::kInt64},     {ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED, DType::kUndefined},
};

// An ORT call whose failure means "absent" (an attribute the node does not have).
bool absent(OrtStatus* s) {
  if (!s) return false;
  ort().ReleaseStatus(s);
  return true;
}

core::AttrKind kind_of(const OrtOpAttr* attr) {
  if (!attr) return core::AttrKind::kAbsent;
  OrtOpAttrType type = ORT_OP_ATTR_UNDEFINED;
  if (absent(ort().OpAttr_GetType(attr, &type))) return core::AttrKind::kOther;
  return type == ORT_OP_ATTR_INT ? core::AttrKind::kInt : type == ORT_OP_ATTR_FLOAT ? core::AttrKind::kFloat
                                                                                   : core::AttrKind::kOther;
}

template <typename T>
T read_attr(const OrtOpAttr* attr, OrtOpAttrType type) {
  T v{};
  size_t written = 0;
  if (OrtStatus* s = ort().ReadOpAttr(attr, type, &v, sizeof(v), &written)) ort().ReleaseStatus(s);
  return v;
}

// An attribute source over OrtOpAttrs found by name (graph nodes and shape inference).
template <typename Find>
core::AttributeSource op_attr_source(Find find) {
  return {[find](const char* name) { return kind_of(find(name)); },
          [find](const char* name) { return read_attr<int64_t>(find(name), ORT_OP_ATTR_INT); },
          [find](const char* name) { return read_attr<float>(find(name), ORT_OP_ATTR_FLOAT); },
          {}};
}

}  // namespace

DType dtype_of(ONNXTensorElementDataType t) {
  for (const auto& [ort_type, dtype] : kTypes)
    if (ort_type == t) return dtype;
  return DType::kOther;
}

ONNXTensorElementDataType ort_type_of(DType t) {
  for (const auto& [ort_type, dtype] : kTypes)
    if (dtype == t) return ort_type;
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

OrtStatus* describe(const OrtTensorTypeAndShapeInfo* info, TensorDesc* desc) {
  ONNXTensorElementDataType t = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  FASTATTN_RETURN_IF_ERROR(ort().GetTensorElementType(info, &t));
  desc->dtype = dtype_of(t);
  size_t rank = 0;
  FASTATTN_RETURN_IF_ERROR(ort().GetDimensionsCount(info, &rank));
  desc->rank = static_cast<int>(rank);
  desc->dims.resize(rank);
  return ort().GetDimensions(info, desc->dims.data(), rank);
}

OrtStatus* describe(const OrtValue* value, TensorDesc* desc) {
  OrtTensorTypeAndShapeInfo* raw = nullptr;
  FASTATTN_RETURN_IF_ERROR(ort().GetTensorTypeAndShape(value, &raw));
  TypeShapeInfoPtr info(raw);
  desc->present = true;
  return describe(info.get(), desc);
}

core::AttributeSource attributes_of(const OrtKernelInfo* info) {
  // A kernel info reads attributes by name and type only: the kind is the getter that succeeds.
  auto kind = [info](const char* name) {
    int64_t i = 0;
    float f = 0.f;
    size_t n = 0;
    if (!absent(ort().KernelInfoGetAttribute_int64(info, name, &i))) return core::AttrKind::kInt;
    if (!absent(ort().KernelInfoGetAttribute_float(info, name, &f))) return core::AttrKind::kFloat;
    if (!absent(ort().KernelInfoGetAttribute_string(info, name, nullptr, &n)) ||
        !absent(ort().KernelInfoGetAttributeArray_int64(info, name, nullptr, &n)) ||
        !absent(ort().KernelInfoGetAttributeArray_float(info, name, nullptr, &n)))
      return core::AttrKind::kOther;
    return core::AttrKind::kAbsent;
  };
  return {kind,
          [info](const char* name) {
            int64_t v = 0;
            absent(ort().KernelInfoGetAttribute_int64(info, name, &v));
            return v;
          },
          [info](const char* name) {
            float v = 0.f;
            absent(ort().KernelInfoGetAttribute_float(info, name, &v));
            return v;
          },
          {}};
}

core::AttributeSource attributes_of(OrtShapeInferContext* ctx) {
  return op_attr_source([ctx](const char* name) {
    const OrtOpAttr* attr = nullptr;
    return absent(ort().ShapeInferContext_GetAttribute(ctx, name, &attr)) ? nullptr : attr;
  });
}

core::AttributeSource attributes_of(const OrtNode* node) {
  core::AttributeSource source = op_attr_source([node](const char* name) {
    const OrtOpAttr* attr = nullptr;  // absent, or not in the schema (custom ops declare none)
    return absent(ort().Node_GetAttributeByName(node, name, &attr)) ? nullptr : attr;
  });
  source.names = [node] {
    std::vector<std::string> names;
    size_t n = 0;
    if (absent(ort().Node_GetNumAttributes(node, &n)) || n == 0) return names;
    std::vector<const OrtOpAttr*> attrs(n, nullptr);
    if (absent(ort().Node_GetAttributes(node, attrs.data(), n))) return names;
    for (const OrtOpAttr* attr : attrs) {
      const char* name = nullptr;
      if (attr && !absent(ort().OpAttr_GetName(attr, &name)) && name) names.emplace_back(name);
    }
    return names;
  };
  return source;
}

}  // namespace fastattn::ep
