// The Ascend backend (plan + runtime) over the CANN test double, without ONNX Runtime or Python:
// each case runs fastattn::ascend::backend().run() on "device" buffers from aclrtMalloc and
// compares the output (and present) with our CPU kernel on the same host inputs. Built for the
// host and cross-built for aarch64 (run under qemu-user) by tests/ascend/test_npu_ep.py.
//   FASTATTN_CANN_TEST_DOUBLE=libcann_double.so ./backend_check   -> "ok N cases", exit 0
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ascend/cann_api.h"
#include "attention_params.h"
#include "cpu/cpu_attention.h"
#include "cpu/vector_math.h"
#include "dispatch.h"

namespace fastattn::ascend {
const Backend& backend();
}

using namespace fastattn;

namespace {

struct Case {
  const char* name;
  bool bnsd;
  int64_t B, N, KVH, Sq, Skv, Sp, D;
  bool causal, present, left_padding;
};

const ParallelFor kSerial = [](int64_t n, const std::function<void(int64_t)>& fn) {
  for (int64_t i = 0; i < n; ++i) fn(i);
};

TensorView view(void* data, bool bnsd, int64_t H, int64_t S, int64_t D) {
  TensorView v;
  v.data = data;
  v.dtype = ElemType::kFloat16;
  v.batch_stride = H * S * D;
  v.head_stride = bnsd ? S * D : D;
  v.seq_stride = bnsd ? D : H * D;
  return v;
}

void* to_device(const std::vector<uint8_t>& host) {
  void* p = nullptr;
  cann::check("aclrtMalloc", cann::api().aclrtMalloc(&p, host.size() ? host.size() : 1, cann::kAclMemMallocHugeFirst));
  if (!host.empty())
    cann::check("aclrtMemcpy",
                cann::api().aclrtMemcpy(p, host.size(), host.data(), host.size(), cann::kAclMemcpyHostToDevice));
  return p;
}

std::vector<uint8_t> to_host(const void* dev, size_t bytes) {
  std::vector<uint8_t> h(bytes);
  cann::check("aclrtMemcpy", cann::api().aclrtMemcpy(h.data(), bytes, dev, bytes, cann::kAclMemcpyDeviceToHost));
  return h;
}

std::vector<uint8_t> random_half(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  std::vector<float> f(n);
  for (float& x : f) x = dist(rng);
  std::vector<uint8_t> out(n * 2);
  cpu::from_float_scaled(f.data(), 1.f, static_cast<int64_t>(n), ElemType::kFloat16, out.data());
  return out;
}

double max_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() / 2; ++i) {
    const double x = cpu::load_one(a.data(), static_cast<int64_t>(i), ElemType::kFloat16);
    const double y = cpu::load_one(b.data(), static_cast<int64_t>(i), ElemType::kFloat16);
    m = std::isnan(x) || std::isnan(y) ? INFINITY : std::max(m, std::fabs(x - y));
  }
  return m;
}

// Runs one case on the backend and on the CPU kernel; returns "" or what differs.
std::string run_case(const Case& c, std::mt19937& rng) {
  const int64_t T = c.Sp + c.Skv;
  auto bytes = [](int64_t n) { return static_cast<size_t>(n) * 2; };
  const auto q = random_half(static_cast<size_t>(c.B * c.N * c.Sq * c.D), rng);
  const auto k = random_half(static_cast<size_t>(c.B * c.KVH * c.Skv * c.D), rng);
  const auto v = random_half(static_cast<size_t>(c.B * c.KVH * c.Skv * c.D), rng);
  const auto pk = random_half(static_cast<size_t>(c.B * c.KVH * c.Sp * c.D), rng);
  const auto pv = random_half(static_cast<size_t>(c.B * c.KVH * c.Sp * c.D), rng);
  std::vector<uint8_t> mask;  // bool key_padding_mask [B, T]: batch b hides its first b keys
  if (c.left_padding) {
    mask.assign(static_cast<size_t>(c.B * T), 1);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t j = 0; j < std::min(b, T - 1); ++j) mask[static_cast<size_t>(b * T + j)] = 0;
  }

  // The same params twice: host pointers (CPU kernel) and device pointers (the backend).
  auto params = [&](void* qd, void* kd, void* vd, void* pkd, void* pvd, void* od, void* prk, void* prv, void* md) {
    AttentionParams p;
    p.dtype = ElemType::kFloat16;
    p.batch = c.B, p.num_heads = c.N, p.kv_num_heads = c.KVH, p.seq_q = c.Sq, p.seq_kv = c.Skv, p.seq_past = c.Sp;
    p.head_dim = p.head_dim_v = c.D;
    p.q = view(qd, c.bnsd, c.N, c.Sq, c.D);
    p.k = view(kd, c.bnsd, c.KVH, c.Skv, c.D);
    p.v = view(vd, c.bnsd, c.KVH, c.Skv, c.D);
    p.out = view(od, c.bnsd, c.N, c.Sq, c.D);
    if (c.Sp) p.past_k = view(pkd, true, c.KVH, c.Sp, c.D), p.past_v = view(pvd, true, c.KVH, c.Sp, c.D);
    if (c.present) p.present_k = view(prk, true, c.KVH, T, c.D), p.present_v = view(prv, true, c.KVH, T, c.D);
    if (md) p.key_padding_mask = md, p.mask_type = MaskType::kBool, p.mask_batch_stride = T;
    p.scale = 1.f / std::sqrt(static_cast<float>(c.D));
    set_window(p, c.causal, -1);
    return p;
  };
  std::vector<uint8_t> out(bytes(c.B * c.N * c.Sq * c.D)), prk(bytes(c.B * c.KVH * T * c.D)), prv(prk.size());
  auto qh = q, kh = k, vh = v, pkh = pk, pvh = pv, mh = mask;
  const AttentionParams host = params(qh.data(), kh.data(), vh.data(), pkh.data(), pvh.data(), out.data(),
                                      prk.data(), prv.data(), mask.empty() ? nullptr : mh.data());
  if (auto why = check_params(host); !why.empty()) return "bad case: " + why;
  cpu::attention_forward(host, kSerial);

  void* dq = to_device(q);
  void* dk = to_device(k);
  void* dv = to_device(v);
  void* dpk = to_device(pk);
  void* dpv = to_device(pv);
  void* dm = to_device(mask);
  void* dout = to_device(std::vector<uint8_t>(out.size()));
  void* dprk = to_device(std::vector<uint8_t>(prk.size()));
  void* dprv = to_device(std::vector<uint8_t>(prv.size()));
  AttentionParams dev = params(dq, dk, dv, dpk, dpv, dout, dprk, dprv, mask.empty() ? nullptr : dm);
  dev.device = Device{DeviceKind::kNpu, 0};
  const Backend& b = ascend::backend();
  std::string why = b.supports(dev);
  if (why.empty()) {
    cann::set_device(0);
    void* stream = nullptr;
    cann::check("aclrtCreateStream", cann::api().aclrtCreateStream(&stream));
    b.run(dev, LaunchContext{dev.device, stream, kSerial});
    cann::check("aclrtSynchronizeStream", cann::api().aclrtSynchronizeStream(stream));
    const double e = max_diff(to_host(dout, out.size()), out);
    const double ek = c.present ? max_diff(to_host(dprk, prk.size()), prk) : 0.0;
    const double ev = c.present ? max_diff(to_host(dprv, prv.size()), prv) : 0.0;
    if (!(e <= 2e-3 && ek == 0.0 && ev == 0.0))
      why = "differs from the CPU kernel: output " + std::to_string(e) + ", present " + std::to_string(ek) + " / " +
            std::to_string(ev);
    cann::api().aclrtDestroyStream(stream);
  } else {
    why = "declined: " + why;
  }
  for (void* p : {dq, dk, dv, dpk, dpv, dm, dout, dprk, dprv}) cann::api().aclrtFree(p);
  return why;
}

}  // namespace

int main() {
  const Case cases[] = {
      {"causal_past_present_bnsd", true, 2, 4, 2, 5, 5, 3, 16, true, true, false},
      {"gqa_bsh", false, 2, 8, 2, 6, 6, 0, 32, false, false, false},
      {"left_padding_causal", true, 3, 2, 2, 7, 7, 0, 16, true, false, true},
      {"decode_past", true, 2, 8, 2, 1, 1, 9, 64, true, true, false},
      {"bsh_past_present", false, 2, 4, 2, 4, 4, 5, 16, true, true, false},
  };
  if (!cann::runtime().api) {
    std::printf("FAIL: %s\n", cann::runtime().missing.c_str());
    return 1;
  }
  cann::set_device(0);
  std::mt19937 rng(1234);
  int failed = 0, n = 0;
  for (const Case& c : cases) {
    ++n;
    std::string why;
    try {
      why = run_case(c, rng);
    } catch (const std::exception& e) {
      why = std::string("threw: ") + e.what();
    }
    if (!why.empty()) {
      std::printf("FAIL %s: %s\n", c.name, why.c_str());
      ++failed;
    }
  }
  if (failed) return 1;
  std::printf("ok %d cases (%s)\n", n, cann::runtime().api->libraries.c_str());
  return 0;
}
