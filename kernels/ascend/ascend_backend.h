// What the NPU device plumbing (ep/ascend_device.cc) tells the Ascend backend.
#pragma once

namespace fastattn::ascend {

// Frees what the backend keeps for `stream` of `device` (the operator's workspace, the staging
// area): called before the stream is destroyed. Waits for the stream first. Never throws.
void release_stream(int device, void* stream) noexcept;

}  // namespace fastattn::ascend
