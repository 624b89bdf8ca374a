// com.fastattention::FastAttention as an OrtCustomOp (runs on the CPU EP), and the
// com.fastattention domain holding it. The same domain is handed out by RegisterCustomOps and
// by the EP factory, so a model using the op loads either way.
#pragma once

#include "ort_api.h"

namespace fastattn::ep {

const OrtCustomOp* fast_attention_custom_op();

// Creates a new OrtCustomOpDomain "com.fastattention" holding the op; caller releases it.
OrtStatus* create_op_domain(OrtCustomOpDomain** domain);

}  // namespace fastattn::ep
