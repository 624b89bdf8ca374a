// Adapters between ONNX Runtime's types and the op contract (core/op_contract.h): element
// types, tensor descriptions and attribute sources. The only place where ORT's types meet the
// contract's.
#pragma once

#include "op_contract.h"
#include "ort_api.h"

namespace fastattn::ep {

using core::DType;
using core::OpAttributes;
using core::TensorDesc;

DType dtype_of(ONNXTensorElementDataType t);
ONNXTensorElementDataType ort_type_of(DType t);

// Element type and dims of a type-and-shape info (dims < 0 where symbolic or unknown).
OrtStatus* describe(const OrtTensorTypeAndShapeInfo* info, TensorDesc* desc);
// The same for a tensor value, which has every dim.
OrtStatus* describe(const OrtValue* value, TensorDesc* desc);

// The attributes of a kernel (custom op), of a node in a shape-inference call, of a graph node.
core::AttributeSource attributes_of(const OrtKernelInfo* info);
core::AttributeSource attributes_of(OrtShapeInferContext* ctx);
core::AttributeSource attributes_of(const OrtNode* node);

}  // namespace fastattn::ep
