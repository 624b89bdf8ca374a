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

bool read_attr(const OrtOpAttr* attr, OrtOpAttrType type, void* out, size_t size) {
  size_t written = 0;
  return attr && !absent(ort().ReadOpAttr(attr, type, out, size, &written));
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
  return {[info](const char* name, int64_t* v) { return !absent(ort().KernelInfoGetAttribute_int64(info, name, v)); },
          [info](const char* name, float* v) { return !absent(ort().KernelInfoGetAttribute_float(info, name, v)); }};
}

core::AttributeSource attributes_of(OrtShapeInferContext* ctx) {
  auto find = [ctx](const char* name) {
    const OrtOpAttr* attr = nullptr;
    return absent(ort().ShapeInferContext_GetAttribute(ctx, name, &attr)) ? nullptr : attr;
  };
  return {[find](const char* name, int64_t* v) { return read_attr(find(name), ORT_OP_ATTR_INT, v, sizeof(*v)); },
          [find](const char* name, float* v) { return read_attr(find(name), ORT_OP_ATTR_FLOAT, v, sizeof(*v)); }};
}

core::AttributeSource attributes_of(const OrtNode* node) {
  auto find = [node](const char* name) {
    const OrtOpAttr* attr = nullptr;  // absent, or not in the schema (custom ops declare none)
    return absent(ort().Node_GetAttributeByName(node, name, &attr)) ? nullptr : attr;
  };
  return {[find](const char* name, int64_t* v) { return read_attr(find(name), ORT_OP_ATTR_INT, v, sizeof(*v)); },
          [find](const char* name, float* v) { return read_attr(find(name), ORT_OP_ATTR_FLOAT, v, sizeof(*v)); }};
}

}  // namespace fastattn::ep
