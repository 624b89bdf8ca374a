// Stand-alone correctness and timing driver of the CUDA backend, without Python or ONNX Runtime:
// it calls fastattn::attention_forward (dispatch.h) with Device{kCuda, 0} and a stream, exactly
// as the EP does.
//   cuda_check [--small] [--long] [--traits 70|75|80|90] [--dims 64,128]
//                                                           numerics grid; exit status 1 on failure
//                                                           (--long adds S = 32768 cases, checked on
//                                                           64 sampled query rows)
//   cuda_check bench [--traits 70|75|80|90] [--reps 20] [--shape B,H,S,D,causal]... [--decode B,H,KV,past,D]... [--fp16]
//                    [--present]                            TFLOP/s of the benchmark shapes; GB/s of
//                                                           K and V read for decode steps; --present
//                                                           also writes present_key/present_value
// Every case draws fresh unit-variance inputs, poisons the outputs with NaN, runs, and compares
// with a float64 reference on the host computed from the same (rounded) inputs. float32 cases run
// through the float16 kernels (float32_bridge.cu); their reference uses the exact float32 inputs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "attention_params.h"
#include "dispatch.h"

using namespace fastattn;

#define CK(x)                                                                                             \
  do {                                                                                                    \
    cudaError_t e_ = (x);                                                                                 \
    if (e_ != cudaSuccess) {                                                                              \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #x); \
      std::exit(3);                                                                                       \
    }                                                                                                     \
  } while (0)

namespace {

// ---- element conversion on the host ----
void encode(float x, ElemType t, void* dst) {
  if (t == ElemType::kFloat32) {
    std::memcpy(dst, &x, 4);
  } else if (t == ElemType::kFloat16) {
    const __half h = __float2half_rn(x);
    std::memcpy(dst, &h, 2);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    std::memcpy(dst, &h, 2);
  }
}
float decode(const void* src, ElemType t) {
  if (t == ElemType::kFloat32) {
    float x;
    std::memcpy(&x, src, 4);
    return x;
  }
  if (t == ElemType::kFloat16) {
    __half h;
    std::memcpy(&h, src, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, src, 2);
  return __bfloat162float(h);
}
const char* short_name(ElemType t) {
  return t == ElemType::kFloat16 ? "fp16" : t == ElemType::kBFloat16 ? "bf16" : "fp32";
}

// A host tensor of float16, bfloat16 or float32 elements with its float values (the rounded
// inputs the reference uses) and a device copy.
struct Buf {
  ElemType t = ElemType::kFloat16;
  size_t esz = 2, n = 0;
  std::vector<uint8_t> raw;  // the elements as stored on the device
  std::vector<float> val;
  void* dev = nullptr;
  void alloc(size_t count, ElemType type) {
    t = type;
    esz = elem_size(type);
    n = count;
    raw.assign(n * esz, 0);
    val.assign(n, 0.f);
    if (n) CK(cudaMalloc(&dev, n * esz));
  }
  void set(size_t i, float x) {
    encode(x, t, &raw[i * esz]);
    val[i] = decode(&raw[i * esz], t);
  }
  // Normal values times mul; large tensors are drawn in chunks on all host threads (each chunk
  // seeded from rng, so the draw stays deterministic).
  void fill_random(std::mt19937& rng, float mul = 1.f) {
    constexpr size_t kChunk = size_t(1) << 16;
    const uint32_t seed = rng();
    const size_t chunks = (n + kChunk - 1) / kChunk;
    std::atomic<size_t> next{0};
    auto work = [&]() {
      for (size_t ch; (ch = next.fetch_add(1)) < chunks;) {
        std::mt19937 r(seed + uint32_t(ch) * 0x9E3779B9u);
        std::normal_distribution<float> nd;
        for (size_t i = ch * kChunk; i < std::min(n, (ch + 1) * kChunk); ++i) set(i, nd(r) * mul);
      }
    };
    const size_t nt = std::min<size_t>(chunks, std::max(1u, std::thread::hardware_concurrency()));
    if (nt <= 1) return work();
    std::vector<std::thread> threads;
    for (size_t t = 0; t < nt; ++t) threads.emplace_back(work);
    for (auto& t : threads) t.join();
  }
  void upload() {
    if (n) CK(cudaMemcpy(dev, raw.data(), n * esz, cudaMemcpyHostToDevice));
  }
  void poison() {
    for (size_t i = 0; i < n; ++i) set(i, NAN);
    upload();
  }
  void download() {
    if (!n) return;
    CK(cudaMemcpy(raw.data(), dev, n * esz, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) val[i] = decode(&raw[i * esz], t);
  }
  ~Buf() {
    if (dev) cudaFree(dev);
  }
};

enum Layout { k4D = 4, k3D = 3, kPacked = 5 };  // kPacked: q, k, v are slices of one [B, S, (H + 2 KVH) D]

struct Case {
  std::string name;
  ElemType dt;
  int b, h, kvh, sq, skv, past, d, dv;
  bool causal;
  int window;      // window_size attribute: -1 none
  int mask_kind;   // 0 none; 1 batch 0 right-padded, batch 1 left-padded; 2 batch 0 fully masked, batch 1 random;
                   // 3 every batch left-padded (decode: batch b loses (10 + 27 b) % 60 percent of the keys)
  MaskType mask_type;
  int bias_kind;   // 0 none; 1 [S_q, S_total] broadcast (with -inf entries); 2 [B, H, S_q, S_total]
  float softcap;
  Layout layout;
  bool present;
  bool expect_decline = false;
  bool nan_hidden = false;  // NaN in the keys and values the key_padding_mask hides (must not leak)
  // Magnitudes (float32 cases): Q, K (past too) and V drawn times these; the scale is divided by
  // qmul * kmul so the scores stay unit-sized, and errors are compared relative to vmul.
  float qmul = 1.f, kmul = 1.f, vmul = 1.f;
};

std::string describe(const Case& c) {
  char s[480], mag[96] = "";
  if (c.qmul != 1.f || c.kmul != 1.f || c.vmul != 1.f)
    std::snprintf(mag, sizeof mag, " |q|x%g |k|x%g |v|x%g", c.qmul, c.kmul, c.vmul);
  std::snprintf(s, sizeof s, "%-5s D=%-3d B=%d H=%d/%d Sq=%-4d Skv=%-4d past=%-4d causal=%d win=%-3d mask=%d%s bias=%d cap=%g %s%s%s%s",
                short_name(c.dt), c.d, c.b, c.h,
                c.kvh, c.sq, c.skv, c.past, c.causal, c.window, c.mask_kind,
                c.mask_kind ? (c.mask_type == MaskType::kBool ? "b" : c.mask_type == MaskType::kInt32 ? "i32" : "i64") : "",
                c.bias_kind, c.softcap, c.layout == k4D ? "4D" : c.layout == k3D ? "3D" : "packed",
                c.present ? " present" : "", c.nan_hidden ? " nan-in-hidden-kv" : "", mag);
  return c.name + " " + s;
}

struct Problem {
  Case c;
  Buf q, k, v, pk, pv, out, prk, prv, bias, qkv;
  std::vector<uint8_t> mask_host;  // 0/1 per [B, S_total]
  void* mask_dev = nullptr;
  AttentionParams p;
  std::vector<int> rows;  // query rows checked against the reference
  std::vector<double> ref;  // [b][h][rows][dv]
  ~Problem() {
    if (mask_dev) cudaFree(mask_dev);
  }
};

TensorView view(void* data, ElemType t, Layout l, int heads, int seq, int d, int64_t packed_row = 0) {
  TensorView v;
  v.data = data;
  v.dtype = t;
  if (l == k4D) {
    v.batch_stride = int64_t(heads) * seq * d;
    v.head_stride = int64_t(seq) * d;
    v.seq_stride = d;
  } else if (l == k3D) {
    v.batch_stride = int64_t(seq) * heads * d;
    v.head_stride = d;
    v.seq_stride = int64_t(heads) * d;
  } else {
    v.batch_stride = int64_t(seq) * packed_row;
    v.head_stride = d;
    v.seq_stride = packed_row;
  }
  return v;
}

float at(const Buf& buf, const TensorView& v, const void* base, int b, int h, int s, int d) {
  const int64_t off = (static_cast<const char*>(v.data) - static_cast<const char*>(base)) / int64_t(buf.esz);
  return buf.val[off + b * v.batch_stride + h * v.head_stride + s * v.seq_stride + d];
}

void setup(Problem& P, std::mt19937& rng) {
  const Case& c = P.c;
  const ElemType t = c.dt;
  const int st = c.past + c.skv;
  AttentionParams& p = P.p;
  p = AttentionParams{};
  p.device = Device{DeviceKind::kCuda, 0};
  p.dtype = t;
  p.batch = c.b;
  p.num_heads = c.h;
  p.kv_num_heads = c.kvh;
  p.seq_q = c.sq;
  p.seq_kv = c.skv;
  p.seq_past = c.past;
  p.head_dim = c.d;
  p.head_dim_v = c.dv;
  if (c.layout == kPacked) {
    const int64_t row = int64_t(c.h + 2 * c.kvh) * c.d;  // (dv == d for packed cases)
    P.qkv.alloc(size_t(c.b) * c.sq * row, t);
    P.qkv.fill_random(rng);
    P.qkv.upload();
    char* base = static_cast<char*>(P.qkv.dev);
    p.q = view(base, t, kPacked, c.h, c.sq, c.d, row);
    p.k = view(base + size_t(c.h) * c.d * P.qkv.esz, t, kPacked, c.kvh, c.skv, c.d, row);
    p.v = view(base + size_t(c.h + c.kvh) * c.d * P.qkv.esz, t, kPacked, c.kvh, c.skv, c.dv, row);
  } else {
    P.q.alloc(size_t(c.b) * c.h * c.sq * c.d, t);
    P.k.alloc(size_t(c.b) * c.kvh * c.skv * c.d, t);
    P.v.alloc(size_t(c.b) * c.kvh * c.skv * c.dv, t);
    P.q.fill_random(rng, c.qmul);
    P.k.fill_random(rng, c.kmul);
    P.v.fill_random(rng, c.vmul);
    for (Buf* x : {&P.q, &P.k, &P.v}) x->upload();
    p.q = view(P.q.dev, t, c.layout, c.h, c.sq, c.d);
    p.k = view(P.k.dev, t, c.layout, c.kvh, c.skv, c.d);
    p.v = view(P.v.dev, t, c.layout, c.kvh, c.skv, c.dv);
  }
  P.out.alloc(size_t(c.b) * c.h * c.sq * c.dv, t);
  p.out = view(P.out.dev, t, c.layout == kPacked ? k3D : c.layout, c.h, c.sq, c.dv);
  if (c.past) {
    P.pk.alloc(size_t(c.b) * c.kvh * c.past * c.d, t);
    P.pv.alloc(size_t(c.b) * c.kvh * c.past * c.dv, t);
    P.pk.fill_random(rng, c.kmul);
    P.pv.fill_random(rng, c.vmul);
    for (Buf* x : {&P.pk, &P.pv}) x->upload();
    p.past_k = view(P.pk.dev, t, k4D, c.kvh, c.past, c.d);
    p.past_v = view(P.pv.dev, t, k4D, c.kvh, c.past, c.dv);
  }
  if (c.present) {
    P.prk.alloc(size_t(c.b) * c.kvh * st * c.d, t);
    P.prv.alloc(size_t(c.b) * c.kvh * st * c.dv, t);
    p.present_k = view(P.prk.dev, t, k4D, c.kvh, st, c.d);
    p.present_v = view(P.prv.dev, t, k4D, c.kvh, st, c.dv);
  }
  if (c.bias_kind) {
    const size_t n = c.bias_kind == 1 ? size_t(c.sq) * st : size_t(c.b) * c.h * c.sq * st;
    P.bias.alloc(n, t);
    P.bias.fill_random(rng);
    for (size_t i = 0; i < n; i += 7) P.bias.set(i, -INFINITY);  // some keys lowered to -inf: not hidden, just weight 0
    P.bias.upload();
    p.bias = P.bias.dev;
    p.bias_dtype = t;
    p.bias_col_stride = 1;
    p.bias_row_stride = st;
    if (c.bias_kind == 2) {
      p.bias_head_stride = int64_t(c.sq) * st;
      p.bias_batch_stride = int64_t(c.h) * c.sq * st;
    }
  }
  if (c.mask_kind) {
    P.mask_host.assign(size_t(c.b) * st, 1);
    for (int b = 0; b < c.b; ++b) {
      uint8_t* m = &P.mask_host[size_t(b) * st];
      if (c.mask_kind == 1) {
        if (b % 2 == 0) for (int j = st * 7 / 10; j < st; ++j) m[j] = 0;  // right padding
        else for (int j = 0; j < st * 4 / 10; ++j) m[j] = 0;              // left padding
      } else if (c.mask_kind == 3) {
        for (int j = 0; j < int(int64_t(st) * ((10 + 27 * b) % 60) / 100); ++j) m[j] = 0;
      } else {
        if (b == 0) for (int j = 0; j < st; ++j) m[j] = 0;                 // fully masked: zeros
        else for (int j = 0; j < st; ++j) m[j] = (rng() % 10) < 7;
      }
    }
    const size_t esz = c.mask_type == MaskType::kBool ? 1 : c.mask_type == MaskType::kInt32 ? 4 : 8;
    std::vector<char> raw(P.mask_host.size() * esz, 0);
    for (size_t i = 0; i < P.mask_host.size(); ++i) {
      // int masks use values other than 1 for "visible": any nonzero counts
      const int64_t val = P.mask_host[i] ? (esz == 1 ? 1 : int64_t(i % 5) + 1) : 0;
      std::memcpy(raw.data() + i * esz, &val, esz);  // little-endian: low bytes first
    }
    CK(cudaMalloc(&P.mask_dev, raw.size()));
    CK(cudaMemcpy(P.mask_dev, raw.data(), raw.size(), cudaMemcpyHostToDevice));
    p.key_padding_mask = P.mask_dev;
    p.mask_type = c.mask_type;
    p.mask_batch_stride = st;
    if (c.nan_hidden && c.layout != kPacked) {
      for (int b = 0; b < c.b; ++b)
        for (int j = c.past; j < st; ++j)
          if (!P.mask_host[size_t(b) * st + j])
            for (int hk = 0; hk < c.kvh; ++hk)
              for (int d = 0; d < c.d; ++d) {
                const int64_t ko = b * p.k.batch_stride + hk * p.k.head_stride + (j - c.past) * p.k.seq_stride + d;
                const int64_t vo = b * p.v.batch_stride + hk * p.v.head_stride + (j - c.past) * p.v.seq_stride + d;
                P.k.set(ko, NAN);
                P.v.set(vo, NAN);
              }
      P.k.upload();
      P.v.upload();
    }
  }
  p.scale = float(1.0 / (std::sqrt(double(c.d)) * double(c.qmul) * double(c.kmul)));
  set_window(p, c.causal, c.window);
  p.softcap = c.softcap;

  // Rows checked: all, or for long queries the first and last 48 and 96 spread between; for the
  // --long cases (S_q > 8192, an O(S^2 D) reference) 64 rows: first, last and 62 spread between.
  P.rows.clear();
  if (c.sq <= 1024) {
    for (int i = 0; i < c.sq; ++i) P.rows.push_back(i);
  } else if (c.sq > 8192) {
    for (int i = 0; i < 64; ++i) P.rows.push_back(int(int64_t(i) * (c.sq - 1) / 63));
  } else {
    for (int i = 0; i < 48; ++i) P.rows.push_back(i);
    for (int i = 0; i < 96; ++i) P.rows.push_back(48 + int(int64_t(i) * (c.sq - 96) / 96));
    for (int i = c.sq - 48; i < c.sq; ++i) P.rows.push_back(i);
  }
}

// float64 reference of the op's contract (README "The op") on the checked rows.
void reference(Problem& P) {
  const Case& c = P.c;
  const AttentionParams& p = P.p;
  const int st = c.past + c.skv, group = c.h / c.kvh, nr = int(P.rows.size());
  P.ref.assign(size_t(c.b) * c.h * nr * c.dv, 0.0);
  const Buf& qb = c.layout == kPacked ? P.qkv : P.q;
  const Buf& kb = c.layout == kPacked ? P.qkv : P.k;
  const Buf& vb = c.layout == kPacked ? P.qkv : P.v;
  const void* qbase = c.layout == kPacked ? P.qkv.dev : P.q.dev;
  const void* kbase = c.layout == kPacked ? P.qkv.dev : P.k.dev;
  const void* vbase = c.layout == kPacked ? P.qkv.dev : P.v.dev;
  std::atomic<int64_t> next{0};
  const int64_t jobs = int64_t(c.b) * c.h * nr;
  auto work = [&]() {
    std::vector<double> s(st), qrow(c.d);
    for (int64_t job; (job = next.fetch_add(1)) < jobs;) {
      const int ri = int(job % nr), h = int(job / nr % c.h), b = int(job / nr / c.h), i = P.rows[ri];
      const int ip = i + st - c.sq, hk = h / group;
      for (int d = 0; d < c.d; ++d) qrow[d] = at(qb, p.q, qbase, b, h, i, d);
      double m = -INFINITY;
      for (int j = 0; j < st; ++j) {
        bool vis = (p.window_right < 0 || j <= ip + p.window_right) && (p.window_left < 0 || ip - j <= p.window_left);
        if (c.mask_kind) vis = vis && P.mask_host[size_t(b) * st + j];
        if (!vis) { s[j] = NAN; continue; }  // NAN marks hidden
        double dot = 0;
        for (int d = 0; d < c.d; ++d)
          dot += qrow[d] * (j < c.past ? at(P.pk, p.past_k, P.pk.dev, b, hk, j, d)
                                       : at(kb, p.k, kbase, b, hk, j - c.past, d));
        dot *= double(p.scale);
        if (p.softcap > 0) dot = p.softcap * std::tanh(dot / p.softcap);
        if (c.bias_kind) {
          const int64_t o = b * p.bias_batch_stride + h * p.bias_head_stride + i * p.bias_row_stride + j;
          dot += P.bias.val[o];
        }
        s[j] = dot;
        m = std::max(m, dot);
      }
      double l = 0;
      for (int j = 0; j < st; ++j) {
        if (std::isnan(s[j])) { s[j] = 0; continue; }
        s[j] = std::isfinite(m) && s[j] != -INFINITY ? std::exp(s[j] - m) : 0;
        l += s[j];
      }
      double* o = &P.ref[((size_t(b) * c.h + h) * nr + ri) * c.dv];
      for (int j = 0; j < st; ++j) {
        if (s[j] == 0) continue;
        for (int d = 0; d < c.dv; ++d)
          o[d] += s[j] * (j < c.past ? at(P.pv, p.past_v, P.pv.dev, b, hk, j, d)
                                     : at(vb, p.v, vbase, b, hk, j - c.past, d));
      }
      for (int d = 0; d < c.dv; ++d) o[d] = l > 0 ? o[d] / l : 0;
    }
  };
  const int nt = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> threads;
  for (int t = 0; t < nt; ++t) threads.emplace_back(work);
  for (auto& t : threads) t.join();
}

struct Result {
  bool ran = false, ok = false;
  std::string why;
  double max_err = 0, rel = 0;
  bool present_ok = true;
  int64_t unwritten = 0;
};

Result run_and_compare(Problem& P, cudaStream_t stream, double tol) {
  Result r;
  const Case& c = P.c;
  P.out.poison();
  if (c.present) { P.prk.poison(); P.prv.poison(); }
  LaunchContext ctx;
  ctx.device = P.p.device;
  ctx.stream = stream;
  std::string err;
  try {
    err = attention_forward(P.p, ctx);
  } catch (const std::exception& e) {
    err = std::string("threw: ") + e.what();
  }
  if (!err.empty()) {
    r.why = err;
    r.ok = c.expect_decline;
    return r;
  }
  r.ran = true;
  CK(cudaStreamSynchronize(stream));
  CK(cudaGetLastError());
  P.out.download();
  const int nr = int(P.rows.size()), st = c.past + c.skv;
  const TensorView& ov = P.p.out;
  for (size_t i = 0; i < P.out.n; ++i) r.unwritten += std::isnan(P.out.val[i]);  // no NaN inputs: NaN = unwritten
  double num = 0, den = 0;
  for (int b = 0; b < c.b; ++b)
    for (int h = 0; h < c.h; ++h)
      for (int ri = 0; ri < nr; ++ri)
        for (int d = 0; d < c.dv; ++d) {
          const double ref = P.ref[((size_t(b) * c.h + h) * nr + ri) * c.dv + d];
          const double got = P.out.val[b * ov.batch_stride + h * ov.head_stride + P.rows[ri] * ov.seq_stride + d];
          const double e = std::fabs(got - ref);
          r.max_err = std::isnan(got) ? INFINITY : std::max(r.max_err, e);
          num += e * e;
          den += ref * ref;
        }
  r.rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  r.max_err /= c.vmul;  // relative to the values' magnitude (1 for unit-variance cases)
  if (c.present) {
    P.prk.download();
    P.prv.download();
    const Buf& kb = c.layout == kPacked ? P.qkv : P.k;
    const Buf& vb = c.layout == kPacked ? P.qkv : P.v;
    const void* kbase = c.layout == kPacked ? P.qkv.dev : P.k.dev;
    const void* vbase = c.layout == kPacked ? P.qkv.dev : P.v.dev;
    for (int b = 0; b < c.b && r.present_ok; ++b)
      for (int h = 0; h < c.kvh; ++h)
        for (int j = 0; j < st; ++j)
          for (int d = 0; d < c.d; ++d) {
            const float ek = j < c.past ? at(P.pk, P.p.past_k, P.pk.dev, b, h, j, d) : at(kb, P.p.k, kbase, b, h, j - c.past, d);
            const float ev = j < c.past ? at(P.pv, P.p.past_v, P.pv.dev, b, h, j, d) : at(vb, P.p.v, vbase, b, h, j - c.past, d);
            const size_t o = ((size_t(b) * c.kvh + h) * st + j) * c.d + d;
            if (std::memcmp(&ek, &P.prk.val[o], 4) || std::memcmp(&ev, &P.prv.val[o], 4)) r.present_ok = false;
          }
  }
  r.ok = !c.expect_decline && r.max_err <= tol && r.unwritten == 0 && r.present_ok;
  if (c.expect_decline) r.why = "expected a decline, but it ran";
  return r;
}

// sm75: traits without bfloat16 (the sm_75 and sm_70 families).
std::vector<Case> make_cases(const std::vector<int>& dims, bool small, bool sm75, bool long_cases) {
  std::vector<Case> out;
  const MaskType B = MaskType::kBool, I32 = MaskType::kInt32, I64 = MaskType::kInt64;
  const ElemType F16 = ElemType::kFloat16, BF16 = ElemType::kBFloat16, F32 = ElemType::kFloat32;
  for (ElemType t : {F16, BF16, F32})
    for (int d : dims) {
      if (sm75 && t == BF16) continue;  // sm_75 and sm_70 have no bfloat16 tensor cores
      auto add = [&](const char* name, int b, int h, int kvh, int sq, int skv, int past, bool causal, int window,
                     int mask, MaskType mt, int bias, float cap, Layout l, bool present) {
        out.push_back(Case{name, t, b, h, kvh, sq, skv, past, d, d, causal, window, mask, mt, bias, cap, l, present});
      };
      // float32 magnitudes beyond float16's range (and below its normals), for the bridge's scaling.
      auto magnitudes = [&](float qm, float km, float vm) {
        out.back().qmul = qm;
        out.back().kmul = km;
        out.back().vmul = vm;
      };
      if (small) {  // for the sanitizers: every path, few blocks
        add("plain", 1, 2, 2, 129, 129, 0, false, -1, 0, B, 0, 0, k4D, false);
        add("causal-past", 1, 2, 1, 7, 70, 5, true, -1, 0, B, 0, 0, k3D, true);
        add("window", 1, 2, 2, 129, 129, 0, false, 33, 0, B, 0, 0, k3D, false);
        add("pad-mask", 2, 2, 1, 64, 129, 0, true, -1, 1, I64, 0, 0, k4D, false);
        add("rand-mask+bias", 2, 2, 2, 64, 129, 3, false, -1, 2, B, 2, 30.f, k4D, true);
        add("mask-nan-hidden", 2, 2, 2, 33, 200, 0, false, -1, 1, I32, 0, 0, k3D, false);
        out.back().nan_hidden = true;
        add("no-visible", 1, 2, 2, 129, 7, 0, true, -1, 0, B, 0, 0, k4D, false);
        add("decode", 2, 4, 1, 1, 1, 1000, true, -1, 3, B, 0, 0, k4D, true);
        // Presents written by the decode kernel itself (no window_left, mask or per-batch lengths).
        add("decode-present", 2, 4, 2, 3, 3, 700, true, -1, 0, B, 0, 0, k3D, true);
        add("decode-present", 1, 8, 2, 1, 1, 300, false, -1, 0, B, 0, 0, k4D, true);
        if (t == F32) {
          add("f32-big", 1, 2, 2, 64, 64, 5, true, -1, 0, B, 0, 0, k4D, true);
          magnitudes(3000.f, 3000.f, 1e5f);
        }
        continue;
      }
      add("basic", 2, 4, 4, 129, 129, 0, false, -1, 0, B, 0, 0, k4D, false);
      add("gqa-causal", 2, 4, 2, 1000, 1000, 0, true, -1, 0, B, 0, 0, k3D, false);
      add("mqa-cross", 1, 4, 1, 64, 1000, 0, false, -1, 0, B, 0, 0, k4D, false);
      add("causal-past", 2, 4, 2, 7, 7, 5, true, -1, 0, B, 0, 0, k4D, true);
      add("decode-past", 2, 4, 4, 1, 1, 4095, true, -1, 0, B, 0, 0, k3D, true);
      add("window-causal", 1, 4, 2, 1000, 1000, 0, true, 100, 0, B, 0, 0, k4D, false);
      add("window-both", 2, 4, 4, 129, 129, 0, false, 33, 0, B, 0, 0, k3D, false);
      add("pad-mask", 2, 4, 2, 129, 1000, 0, false, -1, 1, I64, 0, 0, k4D, false);
      add("rand-mask", 2, 4, 2, 64, 129, 0, true, -1, 2, B, 0, 0, k4D, false);
      add("mask-nan-hidden", 2, 4, 2, 129, 300, 0, false, -1, 1, I32, 0, 0, k3D, false);
      out.back().nan_hidden = true;
      add("rand-mask-nan", 2, 4, 4, 33, 200, 0, false, -1, 2, B, 0, 0, k4D, false);
      out.back().nan_hidden = true;
      add("bias-bcast", 2, 4, 4, 129, 129, 0, true, -1, 0, B, 1, 0, k4D, false);
      add("all", 2, 4, 2, 64, 64, 7, true, -1, 1, I32, 2, 30.f, k3D, true);
      add("softcap", 2, 4, 4, 7, 64, 0, false, -1, 0, B, 0, 50.f, k4D, false);
      add("no-visible", 1, 4, 4, 129, 7, 0, true, -1, 0, B, 0, 0, k4D, false);
      add("packed-qkv", 2, 4, 2, 1000, 1000, 0, true, -1, 0, B, 0, 0, kPacked, false);
      add("cross-1x4096", 1, 4, 2, 1, 4096, 0, false, -1, 0, B, 0, 0, k4D, false);
      add("present-nopast", 1, 4, 2, 64, 64, 0, true, -1, 0, B, 0, 0, k3D, true);
      // Prefill presents (the copy kernel): GQA, several key tiles and a partial last one.
      add("present-gqa", 2, 8, 2, 300, 300, 77, false, -1, 0, B, 0, 0, k4D, true);
      add("present-causal", 1, 8, 2, 1000, 1000, 1500, true, -1, 0, B, 0, 0, k3D, true);
      if (d == 64 || d == 128) {
        add("long-causal", 1, 4, 4, 4096, 4096, 0, true, -1, 0, B, 0, 0, k3D, false);
        add("long-mask-mqa", 2, 4, 1, 4096, 4096, 0, false, -1, 1, B, 0, 0, k4D, false);
      }
      if (t == F32) {
        // Q, K within float16 but V beyond it (V scaled by 2^-c, the output by 2^c).
        add("f32-big", 2, 4, 2, 129, 129, 7, true, -1, 0, B, 0, 0, k4D, true);
        magnitudes(3000.f, 3000.f, 1e5f);
        // Q beyond float16 (Q * 2^-a, K * 2^a), tiny V (float16 subnormals unless normalised up).
        add("f32-qhuge-vtiny", 2, 4, 4, 64, 300, 7, false, -1, 1, I64, 2, 0, k3D, true);
        magnitudes(1e6f, 1e-3f, 1e-6f);
        // K beyond float16, Q tiny, through past and decode.
        add("f32-khuge-decode", 2, 8, 2, 3, 3, 4099, true, -1, 3, B, 0, 0, k4D, true);
        magnitudes(1e-4f, 2e5f, 3e4f);
      }
      // Decode shapes (the split-KV path): few query rows, long past, GQA/MQA, causal.
      const bool dec_present = t != BF16;
      add("decode-gqa", 2, 8, 2, 1, 1, 1000, true, -1, 0, B, 0, 0, k4D, dec_present);
      add("decode-gqa", 2, 8, 2, 3, 3, 4099, true, -1, 0, B, 0, 0, k3D, false);
      add("decode-gqa", 1, 8, 2, 16, 16, 8192, true, -1, 0, B, 0, 0, k4D, dec_present);
      if (t == F32) continue;
      add("decode-mqa", 2, 8, 1, 1, 1, 8192, true, -1, 0, B, 0, 0, k4D, false);
      add("decode-mqa", 2, 8, 1, 16, 16, 1000, true, -1, 0, B, 0, 0, k3D, false);
      add("decode-window", 1, 8, 2, 3, 3, 8192, true, 512, 0, B, 0, 0, k4D, false);
      add("decode-window", 2, 8, 1, 16, 16, 4099, true, 100, 0, B, 0, 0, k3D, false);
      add("decode-mask", 2, 8, 2, 1, 1, 4099, true, -1, 3, I64, 0, 0, k4D, false);
      add("decode-mask", 2, 8, 1, 16, 16, 8192, true, -1, 3, B, 0, 0, k4D, false);
      add("decode-bias", 2, 8, 2, 3, 3, 1000, true, -1, 0, B, 2, 0, k4D, false);
      add("decode-bias-mask", 2, 8, 2, 1, 1, 8192, true, -1, 3, I32, 1, 0, k3D, false);
      // Presents written by the decode kernel (split-KV; packed or not; the full variant's paths).
      add("decode-present", 2, 8, 2, 7, 7, 3000, false, -1, 0, B, 0, 0, k3D, true);
      add("decode-present", 2, 8, 1, 16, 16, 4099, true, -1, 0, B, 0, 0, k4D, true);
      add("decode-present-bias", 2, 8, 4, 4, 4, 1000, true, -1, 0, B, 2, 30.f, k4D, true);
      add("decode-present-window", 1, 8, 2, 3, 3, 2000, true, 100, 0, B, 0, 0, k4D, true);  // copy kernel
    }
  if (long_cases)  // S = 32768 (8192 above D = 128), checked on 64 sampled rows
    for (int d : dims)
      for (ElemType t : {F16, BF16, F32}) {
        if (sm75 && t == BF16) continue;
        const int s = d <= 128 ? 32768 : 8192;
        for (bool causal : {true, false}) {
          if (t != F16 && !causal) continue;
          out.push_back(Case{"long", t, 1, 2, 2, s, s, 0, d, d, causal, -1, 0, B, 0, 0.f, k4D, false});
        }
      }
  // Cases the backend must decline, with its reason printed.
  auto decline = [&](const char* name, ElemType t, int d, int dv) {
    Case c{name, t, 1, 2, 2, 16, 16, 0, d, dv, false, -1, 0, MaskType::kBool, 0, 0.f, k4D, false};
    c.expect_decline = true;
    out.push_back(c);
  };
  decline("decline-dv", F16, 64, 32);
  decline("decline-dv-fp32", F32, 64, 32);
  decline("decline-d20", F16, 20, 20);
  decline("decline-d512", F16, 512, 512);
  if (sm75) decline("decline-bf16-sm75", BF16, 64, 64);
  return out;
}

std::vector<int> parse_dims(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

int check(bool small, bool long_cases, const std::vector<int>& dims, const char* traits) {
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::mt19937 rng(20261202);
  int fails = 0, runs = 0;
  double worst[3] = {0, 0, 0};  // by ElemType: fp32, fp16, bf16
  for (const Case& c : make_cases(dims, small, std::string(traits) == "75" || std::string(traits) == "70", long_cases)) {
    Problem P;
    P.c = c;
    setup(P, rng);
    if (!c.expect_decline) reference(P);
    // float32 runs on the float16 kernels: float16's tolerance (on errors relative to |v|).
    const double tol = c.dt == ElemType::kBFloat16 ? 2e-2 : 1e-2;
    Result r = run_and_compare(P, stream, tol);
    ++runs;
    fails += !r.ok;
    if (r.ran) {
      double& w = worst[static_cast<int>(c.dt)];
      w = std::max(w, r.max_err);
      std::printf("%s [traits %s] %s: max abs err %.3g%s (tol %.0e), rel l2 %.2e, unwritten %lld%s%s\n", r.ok ? "ok  " : "FAIL",
                  traits, describe(c).c_str(), r.max_err, c.vmul != 1.f ? " (relative to |v|)" : "", tol, r.rel,
                  (long long)r.unwritten, c.present ? (r.present_ok ? ", present exact" : ", PRESENT MISMATCH") : "",
                  r.why.empty() ? "" : (" " + r.why).c_str());
    } else {
      std::printf("%s [traits %s] %s: declined: %s\n", r.ok ? "ok  " : "FAIL", traits, describe(c).c_str(), r.why.c_str());
    }
    std::fflush(stdout);
  }
  CK(cudaStreamDestroy(stream));
  std::printf("SUMMARY traits %s: %d cases, %d failure(s); worst max abs error fp16 %.3g, bf16 %.3g, fp32 %.3g\n", traits,
              runs, fails, worst[1], worst[2], worst[0]);
  return fails ? 1 : 0;
}

// Unit-variance pseudo-random 16-bit values written on the device (bench sizes are too large to
// draw on the host quickly): Box-Muller on a per-element hash.
__device__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
  return uint32_t(x);
}
__global__ void fill_normal(uint16_t* out, size_t n, uint64_t seed, bool bf16) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float u1 = (hash32(seed * 0x9E3779B97F4A7C15ull + 2 * i) + 1.f) * 2.3283064e-10f;
    const float u2 = hash32(seed * 0x9E3779B97F4A7C15ull + 2 * i + 1) * 2.3283064e-10f;
    const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    if (bf16) { __nv_bfloat16 h = __float2bfloat16_rn(z); out[i] = *reinterpret_cast<uint16_t*>(&h); }
    else { __half h = __float2half_rn(z); out[i] = *reinterpret_cast<uint16_t*>(&h); }
  }
}

// Prefill: S_q = S_kv = s. Decode (past > 0): one new query and key over `past` cached keys,
// kvh KV heads (GQA), causal.
struct Shape { int b, h, s, d; bool causal; int kvh = 0, past = 0; };

int bench(const char* traits, int reps, std::vector<Shape> shapes, std::vector<ElemType> types, bool presents) {
  if (shapes.empty())
    shapes = {{8, 32, 1024, 128, true}, {2, 32, 4096, 128, true}, {1, 32, 16384, 128, true}, {8, 32, 1024, 64, false},
              {2, 16, 8192, 64, true}};
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  uint64_t seed = 1;
  for (ElemType t : types) {
    if (t == ElemType::kBFloat16 && (std::string(traits) == "75" || std::string(traits) == "70")) continue;
    for (const Shape& s : shapes) {
      const bool decode = s.past > 0;
      const int kvh = decode ? s.kvh : s.h, sq = decode ? 1 : s.s;
      // q, k, v, out (+ past k, past v when decoding; + present k, present v with --present)
      const size_t present_elems = size_t(s.b) * kvh * (s.past + sq) * s.d;
      const size_t elems[8] = {size_t(s.b) * s.h * sq * s.d, size_t(s.b) * kvh * sq * s.d, size_t(s.b) * kvh * sq * s.d,
                               size_t(s.b) * s.h * sq * s.d, size_t(s.b) * kvh * s.past * s.d,
                               size_t(s.b) * kvh * s.past * s.d, present_elems, present_elems};
      uint16_t* buf[8] = {};
      for (int i = 0; i < 8; ++i) {
        if ((i == 4 || i == 5) && !decode) continue;
        if (i >= 6 && !presents) continue;
        CK(cudaMalloc(&buf[i], elems[i] * 2));
        fill_normal<<<1024, 256, 0, stream>>>(buf[i], elems[i], seed++, t == ElemType::kBFloat16);
      }
      CK(cudaMemsetAsync(buf[3], 0xFF, elems[3] * 2, stream));  // output poisoned (NaN)
      CK(cudaGetLastError());
      AttentionParams p;
      p.device = Device{DeviceKind::kCuda, 0};
      p.dtype = t;
      p.batch = s.b; p.num_heads = s.h; p.kv_num_heads = kvh; p.seq_q = sq; p.seq_kv = sq; p.seq_past = s.past;
      p.head_dim = s.d; p.head_dim_v = s.d;
      p.q = view(buf[0], t, k4D, s.h, sq, s.d);
      p.k = view(buf[1], t, k4D, kvh, sq, s.d);
      p.v = view(buf[2], t, k4D, kvh, sq, s.d);
      p.out = view(buf[3], t, k4D, s.h, sq, s.d);
      if (decode) {
        p.past_k = view(buf[4], t, k4D, kvh, s.past, s.d);
        p.past_v = view(buf[5], t, k4D, kvh, s.past, s.d);
      }
      if (presents) {
        p.present_k = view(buf[6], t, k4D, kvh, s.past + sq, s.d);
        p.present_v = view(buf[7], t, k4D, kvh, s.past + sq, s.d);
      }
      p.scale = 1.f / std::sqrt(float(s.d));
      set_window(p, s.causal || decode, -1);
      LaunchContext ctx;
      ctx.device = p.device;
      ctx.stream = stream;
      std::string err = attention_forward(p, ctx);
      if (!err.empty()) { std::printf("bench: declined: %s\n", err.c_str()); return 1; }
      CK(cudaStreamSynchronize(stream));
      std::vector<uint16_t> host(elems[3]);
      CK(cudaMemcpy(host.data(), buf[3], elems[3] * 2, cudaMemcpyDeviceToHost));
      const uint16_t inf_bits = t == ElemType::kFloat16 ? 0x7C00 : 0x7F80;
      int64_t unwritten = 0;
      for (uint16_t x : host) unwritten += (x & 0x7FFF) > inf_bits;
      for (int i = 0; i < 3; ++i) attention_forward(p, ctx);
      std::vector<float> ms;
      for (int r = 0; r < reps; ++r) {
        CK(cudaEventRecord(e0, stream));
        attention_forward(p, ctx);
        CK(cudaEventRecord(e1, stream));
        CK(cudaEventSynchronize(e1));
        float x;
        CK(cudaEventElapsedTime(&x, e0, e1));
        ms.push_back(x);
      }
      CK(cudaGetLastError());
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      // With --present the step also writes present = concat(past, new) (FASTATTN_CUDA_PRESENT_COPY=1:
      // by the copy kernel instead of the attention kernel).
      const std::string tag = std::string(t == ElemType::kFloat16 ? "fp16" : "bf16") + (presents ? " +present" : "");
      const char* type = tag.c_str();
      const char* nan = unwritten ? "  (OUTPUT HAS NaN: unwritten?)" : "";
      if (decode) {  // bytes of K and V read (past + new), the cost of a memory-bound step
        const double bytes = 2.0 * s.b * kvh * double(s.past + 1) * s.d * 2;
        std::printf("BENCH %s traits %s decode (B,H,KV,past,D)=(%d,%d,%d,%d,%d): median %.3f ms (min %.3f, max %.3f, %d runs) %.0f GB/s%s\n",
                    type, traits, s.b, s.h, kvh, s.past, s.d, med, ms.front(), ms.back(), reps, bytes / med / 1e6, nan);
      } else {
        const double flops = 4.0 * s.b * s.h * double(s.s) * s.s * s.d * (s.causal ? 0.5 : 1.0);
        std::printf("BENCH %s traits %s (B,H,S,D,causal)=(%d,%d,%d,%d,%d): median %.3f ms (min %.3f, max %.3f, %d runs) %.1f TFLOP/s%s\n",
                    type, traits, s.b, s.h, s.s, s.d, s.causal, med, ms.front(), ms.back(), reps, flops / med / 1e9, nan);
      }
      std::fflush(stdout);
      for (auto& x : buf)
        if (x) CK(cudaFree(x));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool do_bench = false, small = false, long_cases = false, presents = false;
  int reps = 20;
  std::vector<int> dims;
  std::vector<Shape> shapes;
  std::vector<ElemType> types = {ElemType::kFloat16, ElemType::kBFloat16};
  const char* traits = "80";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "bench") do_bench = true;
    else if (a == "--small") small = true;
    else if (a == "--long") long_cases = true;
    else if (a == "--traits" && i + 1 < argc) traits = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--dims" && i + 1 < argc) dims = parse_dims(argv[++i]);
    else if (a == "--shape" && i + 1 < argc) {  // B,H,S,D,causal (bench)
      const std::vector<int> v = parse_dims(argv[++i]);
      if (v.size() != 5) { std::fprintf(stderr, "--shape B,H,S,D,causal\n"); return 2; }
      shapes.push_back(Shape{v[0], v[1], v[2], v[3], v[4] != 0});
    } else if (a == "--decode" && i + 1 < argc) {  // B,H,KV,past,D (bench)
      const std::vector<int> v = parse_dims(argv[++i]);
      if (v.size() != 5 || v[3] < 1) { std::fprintf(stderr, "--decode B,H,KV,past,D (past >= 1)\n"); return 2; }
      shapes.push_back(Shape{v[0], v[1], 1, v[4], true, v[2], v[3]});
    } else if (a == "--fp16") types = {ElemType::kFloat16};
    else if (a == "--present") presents = true;
    else { std::fprintf(stderr, "usage: cuda_check [bench [--shape B,H,S,D,causal]... [--decode B,H,KV,past,D]... [--fp16] [--present]] [--small] [--long] [--traits 70|75|80|90] [--reps N] [--dims 64,128]\n"); return 2; }
  }
  // 90: the device's own family (wgmma on a Hopper when the build has sm_90a code).
  setenv("FASTATTN_CUDA_TRAITS", traits, 1);
  if (dims.empty()) dims = {64, 128};
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s (sm_%d%d, %d SMs); backend: %s\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
              backend_for(DeviceKind::kCuda)->describe().c_str());
  return do_bench ? bench(traits, reps, shapes, types, presents) : check(small, long_cases, dims, traits);
}
