// Stand-alone check of the CPU kernel against a direct double-precision reference, without
// Python: for cross builds (aarch64 under qemu) and quiet machines.
//   kernel_check                      numerics of a set of cases; exit status 1 on a mismatch
//   kernel_check bench S N D causal threads [reps]   median milliseconds of one call
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "attention_params.h"
#include "cpu/cpu_attention.h"
#include "cpu/thread_pool.h"

using namespace fastattn;

namespace {

struct Case {
  int64_t b, n, kvh, sq, skv, past, d, dv;
  bool causal;
  int64_t window;
  bool mask, bias, three_d;
  float softcap;
};

// Everything float32, 4D [B, H, S, D] (or 3D [B, S, H*D] views), optional pieces.
struct Tensors {
  std::vector<float> q, k, v, pk, pv, bias, out;
  std::vector<uint8_t> mask;
};

TensorView view(std::vector<float>& x, const Case& c, int64_t heads, int64_t seq, int64_t dim, bool three_d) {
  TensorView t;
  t.data = x.data();
  if (three_d) { t.batch_stride = seq * heads * dim; t.head_stride = dim; t.seq_stride = heads * dim; }
  else { t.batch_stride = heads * seq * dim; t.head_stride = seq * dim; t.seq_stride = dim; }
  (void)c;
  return t;
}

float at(const TensorView& t, int64_t b, int64_t h, int64_t s, int64_t d) {
  return static_cast<const float*>(t.data)[b * t.batch_stride + h * t.head_stride + s * t.seq_stride + d];
}

double reference_max_error(const AttentionParams& p) {
  const int64_t S = p.seq_total(), group = p.num_heads / p.kv_num_heads;
  double worst = 0;
  std::vector<double> s(S);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.num_heads; ++h)
      for (int64_t i = 0; i < p.seq_q; ++i) {
        const int64_t ii = i + S - p.seq_q;
        double m = -INFINITY;
        for (int64_t j = 0; j < S; ++j) {
          bool vis = (p.window_right < 0 || j <= ii + p.window_right) && (p.window_left < 0 || ii - j <= p.window_left);
          if (p.key_padding_mask) vis = vis && static_cast<const uint8_t*>(p.key_padding_mask)[b * p.mask_batch_stride + j];
          if (!vis) { s[j] = -INFINITY; continue; }
          double dot = 0;
          for (int64_t d = 0; d < p.head_dim; ++d)
            dot += double(at(p.q, b, h, i, d)) *
                   (j < p.seq_past ? at(p.past_k, b, h / group, j, d) : at(p.k, b, h / group, j - p.seq_past, d));
          dot *= p.scale;
          if (p.softcap > 0) dot = p.softcap * std::tanh(dot / p.softcap);
          if (p.bias) dot += static_cast<const float*>(p.bias)[b * p.bias_batch_stride + h * p.bias_head_stride +
                                                              i * p.bias_row_stride + j * p.bias_col_stride];
          s[j] = dot;
          m = std::max(m, dot);
        }
        double l = 0;
        for (int64_t j = 0; j < S; ++j) { s[j] = std::isfinite(m) && s[j] != -INFINITY ? std::exp(s[j] - m) : 0; l += s[j]; }
        for (int64_t d = 0; d < p.head_dim_v; ++d) {
          double o = 0;
          for (int64_t j = 0; j < S; ++j)
            if (s[j] != 0)
              o += s[j] * (j < p.seq_past ? at(p.past_v, b, h / group, j, d) : at(p.v, b, h / group, j - p.seq_past, d));
          o = l > 0 ? o / l : 0;
          worst = std::max(worst, std::fabs(o - at(p.out, b, h, i, d)));
          if (!std::isfinite(at(p.out, b, h, i, d))) worst = INFINITY;
        }
      }
  return worst;
}

AttentionParams make(const Case& c, Tensors& t, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  auto fill = [&](std::vector<float>& x, size_t n) { x.resize(n); for (auto& e : x) e = nd(rng); };
  const int64_t st = c.past + c.skv;
  fill(t.q, c.b * c.n * c.sq * c.d);
  fill(t.k, c.b * c.kvh * c.skv * c.d);
  fill(t.v, c.b * c.kvh * c.skv * c.dv);
  t.out.assign(c.b * c.n * c.sq * c.dv, NAN);
  AttentionParams p;
  p.batch = c.b; p.num_heads = c.n; p.kv_num_heads = c.kvh; p.seq_q = c.sq; p.seq_kv = c.skv; p.seq_past = c.past;
  p.head_dim = c.d; p.head_dim_v = c.dv;
  p.q = view(t.q, c, c.n, c.sq, c.d, c.three_d);
  p.k = view(t.k, c, c.kvh, c.skv, c.d, c.three_d);
  p.v = view(t.v, c, c.kvh, c.skv, c.dv, c.three_d);
  p.out = view(t.out, c, c.n, c.sq, c.dv, c.three_d);
  if (c.past) {
    fill(t.pk, c.b * c.kvh * c.past * c.d);
    fill(t.pv, c.b * c.kvh * c.past * c.dv);
    p.past_k = view(t.pk, c, c.kvh, c.past, c.d, false);
    p.past_v = view(t.pv, c, c.kvh, c.past, c.dv, false);
  }
  if (c.bias) {  // [S_q, S_total] broadcast over batch and heads, with some -inf
    fill(t.bias, c.sq * st);
    for (size_t i = 0; i < t.bias.size(); i += 7) t.bias[i] = -INFINITY;
    p.bias = t.bias.data(); p.bias_row_stride = st; p.bias_col_stride = 1;
  }
  if (c.mask) {
    t.mask.resize(c.b * st);
    for (auto& e : t.mask) e = (rng() % 10) < 7;
    for (int64_t j = 0; j < st; ++j) t.mask[j] = 0;  // batch 0 fully masked: zeros
    p.key_padding_mask = t.mask.data(); p.mask_type = MaskType::kBool; p.mask_batch_stride = st;
  }
  p.scale = 1.f / std::sqrt(float(c.d));
  set_window(p, c.causal, c.window); p.softcap = c.softcap;
  return p;
}

int check() {
  const Case cases[] = {
      {1, 4, 4, 64, 64, 0, 64, 64, false, -1, false, false, false, 0},
      {2, 8, 2, 257, 300, 0, 80, 80, true, -1, false, false, true, 0},
      {2, 8, 1, 7, 1031, 0, 128, 128, false, 100, true, false, false, 0},
      {2, 4, 4, 130, 200, 70, 32, 48, true, -1, true, true, false, 30.f},
      {1, 2, 2, 1, 1, 500, 64, 64, true, -1, false, false, true, 0},
      {1, 4, 2, 300, 300, 0, 64, 36, false, 50, false, true, false, 0},
  };
  std::mt19937 rng(1);
  int failures = 0;
  for (const Case& c : cases) {
    Tensors t;
    AttentionParams p = make(c, t, rng);
    const std::string err = check_params(p);
    if (!err.empty()) { std::printf("bad case: %s\n", err.c_str()); return 2; }
    cpu::attention_forward(p, cpu::make_thread_parallel_for(2));
    const double e = reference_max_error(p);
    const bool ok = e <= 2e-5;
    failures += !ok;
    std::printf("%s B=%ld N=%ld/%ld Sq=%ld Skv=%ld past=%ld D=%ld Dv=%ld causal=%d window=%ld mask=%d bias=%d 3d=%d softcap=%g: max error %.3g\n",
                ok ? "ok  " : "FAIL", long(c.b), long(c.n), long(c.kvh), long(c.sq), long(c.skv), long(c.past), long(c.d),
                long(c.dv), c.causal, long(c.window), c.mask, c.bias, c.three_d, c.softcap, e);
  }
  std::printf("isa: %s (compiled: %s); %d failure(s)\n", cpu::selected_isa(), cpu::compiled_isas(), failures);
  return failures ? 1 : 0;
}

int bench(int argc, char** argv) {
  if (argc < 7) { std::printf("usage: kernel_check bench S N D causal threads [reps [3d]]\n"); return 2; }
  const int64_t s = std::atoll(argv[2]), n = std::atoll(argv[3]), d = std::atoll(argv[4]);
  const bool causal = std::atoi(argv[5]) != 0;
  const int threads = std::atoi(argv[6]), reps = argc > 7 ? std::atoi(argv[7]) : 5;
  const bool three_d = argc > 8 && std::string(argv[8]) == "3d";
  const Case c{1, n, n, s, s, 0, d, d, causal, -1, false, false, three_d, 0};
  std::mt19937 rng(1);
  Tensors t;
  AttentionParams p = make(c, t, rng);
  const auto pf = cpu::make_thread_parallel_for(threads);
  cpu::attention_forward(p, pf);
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu::attention_forward(p, pf);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double flops = 4.0 * s * s * d * n * (causal ? 0.5 : 1.0);
  std::printf("S=%ld N=%ld D=%ld causal=%d %s threads=%d: median %.1f ms (%.0f GFLOP/s), min %.1f ms; isa=%s\n", long(s),
              long(n), long(d), causal, three_d ? "3d" : "4d", threads, ms[ms.size() / 2], flops / ms[ms.size() / 2] / 1e6, ms[0],
              cpu::selected_isa());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "bench") return bench(argc, argv);
  return check();
}
