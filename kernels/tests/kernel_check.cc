// Stand-alone check of the CPU kernel against a direct double-precision reference, without
// Python: for cross builds (aarch64 under qemu) and quiet machines.
//   kernel_check                      numerics of a set of cases; exit status 1 on a mismatch
//   kernel_check bench S N D causal threads [reps]   median milliseconds of one call
//   kernel_check decode B N KVH D past threads [reps [inplace]]   one decode step (S_q = 1)
#include <algorithm>
#include <cstring>
#include <string>
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

int check_gqa();

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
  failures += check_gqa();
  std::printf("isa: %s (compiled: %s); %d failure(s)\n", cpu::selected_isa(), cpu::compiled_isas(), failures);
  return failures ? 1 : 0;
}


// ---- GroupQueryAttention features: kv_len, in-place cache with past_len, rotary, sinks ----

struct GqaCase {
  const char* name;
  int64_t b, n, kvh, sq, d;
  std::vector<int> past;    // per batch: rows already in the cache (in place), else empty (prompt, no cache)
  std::vector<int> kv_len;  // per batch, or empty
  bool causal;
  int64_t window;
  int rotary;  // 0 none, 1 half split, 2 interleaved
  int64_t rot_dim;
  bool pos_ids, smooth, sink;
  ElemType dt;
  int past_view;  // in place: 0 past_k null, 1 past_k aliases present, 2 past_len null (seq_past for all)
};

// Values held as float (already representable in the element type) and encoded on demand.
float round_dt(float x, ElemType t) {
  if (t == ElemType::kFloat16) return float(_Float16(x));
  if (t == ElemType::kBFloat16) {
    uint32_t u; std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return x;
    u = ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) << 16;
    float f; std::memcpy(&f, &u, 4); return f;
  }
  return x;
}
struct Buf {
  ElemType t;
  std::vector<char> bytes;
  void init(const std::vector<float>& x, ElemType dt) {
    t = dt; bytes.resize(x.size() * elem_size(t));
    for (size_t i = 0; i < x.size(); ++i) set(i, x[i]);
  }
  void set(size_t i, float x) {
    if (t == ElemType::kFloat32) { std::memcpy(bytes.data() + 4 * i, &x, 4); return; }
    if (t == ElemType::kFloat16) { _Float16 h = _Float16(x); std::memcpy(bytes.data() + 2 * i, &h, 2); return; }
    x = round_dt(x, t); uint32_t u; std::memcpy(&u, &x, 4); uint16_t h = uint16_t(u >> 16); std::memcpy(bytes.data() + 2 * i, &h, 2);
  }
  float get(size_t i) const {
    if (t == ElemType::kFloat32) { float f; std::memcpy(&f, bytes.data() + 4 * i, 4); return f; }
    if (t == ElemType::kFloat16) { _Float16 h; std::memcpy(&h, bytes.data() + 2 * i, 2); return float(h); }
    uint16_t h; std::memcpy(&h, bytes.data() + 2 * i, 2); uint32_t u = uint32_t(h) << 16; float f; std::memcpy(&f, &u, 4); return f;
  }
};
TensorView view4(Buf& x, int64_t heads, int64_t seq, int64_t dim) {
  TensorView v; v.data = x.bytes.data(); v.dtype = x.t;
  v.batch_stride = heads * seq * dim; v.head_stride = seq * dim; v.seq_stride = dim;
  return v;
}

void rotate_ref(std::vector<double>& x, const std::vector<float>& cosc, const std::vector<float>& sinc, int64_t half,
                int64_t pos, bool interleaved) {
  for (int64_t i = 0; i < half; ++i) {
    const double c = cosc[pos * half + i], s = sinc[pos * half + i];
    const int64_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
    const double x0 = x[i0], x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x1 * c + x0 * s;
  }
}

// Runs one case; returns the number of failed checks (printing them).
int run_gqa(const GqaCase& c, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  const bool in_place = !c.past.empty();
  const int64_t B = c.b, N = c.n, H = c.kvh, Sq = c.sq, D = c.d, group = N / H;
  int64_t max_past = 0;
  for (int v : c.past) max_past = std::max<int64_t>(max_past, v);
  const int64_t cap = in_place ? max_past + Sq + 3 : 0;  // 3 spare rows that must stay NaN
  auto rnd = [&](size_t n) { std::vector<float> x(n); for (auto& e : x) e = round_dt(nd(rng), c.dt); return x; };
  std::vector<float> q = rnd(B * N * Sq * D), k = rnd(B * H * Sq * D), v = rnd(B * H * Sq * D);
  Buf qb, kb, vb, ob, pkb, pvb;
  qb.init(q, c.dt); kb.init(k, c.dt); vb.init(v, c.dt);
  ob.init(std::vector<float>(B * N * Sq * D, NAN), c.dt);
  std::vector<float> pk0, pv0;
  if (in_place) {  // known past rows below past[b], NaN above
    pk0 = rnd(B * H * cap * D); pv0 = rnd(B * H * cap * D);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = c.past[b]; j < cap; ++j)
          for (int64_t d = 0; d < D; ++d) pk0[((b * H + h) * cap + j) * D + d] = pv0[((b * H + h) * cap + j) * D + d] = NAN;
    pkb.init(pk0, c.dt); pvb.init(pv0, c.dt);
  }
  const int64_t max_pos = max_past + Sq + 8, half = c.rot_dim / 2;
  std::vector<float> cosc(max_pos * half), sinc(max_pos * half);
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double th = p * std::pow(10000.0, -2.0 * i / std::max<int64_t>(c.rot_dim, 1));
      cosc[p * half + i] = round_dt(float(std::cos(th)), c.dt); sinc[p * half + i] = round_dt(float(std::sin(th)), c.dt);
    }
  Buf cosb, sinb, sinkb;
  cosb.init(cosc, c.dt); sinb.init(sinc, c.dt);
  std::vector<int64_t> pos_ids(B * Sq);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < Sq; ++s) pos_ids[b * Sq + s] = (in_place ? c.past[b] : 0) + s + (b % 2 ? 3 : 1);
  std::vector<float> sinks = rnd(N);
  sinkb.init(sinks, c.dt);
  std::vector<int32_t> past32(c.past.begin(), c.past.end()), kvlen32(c.kv_len.begin(), c.kv_len.end());

  AttentionParams p;
  p.dtype = c.dt; p.batch = B; p.num_heads = N; p.kv_num_heads = H; p.seq_q = Sq; p.seq_kv = Sq;
  p.head_dim = p.head_dim_v = D;
  p.q = view4(qb, N, Sq, D); p.k = view4(kb, H, Sq, D); p.v = view4(vb, H, Sq, D); p.out = view4(ob, N, Sq, D);
  if (in_place) {
    p.kv_capacity = cap;
    p.present_k = view4(pkb, H, cap, D); p.present_v = view4(pvb, H, cap, D);
    if (c.past_view == 2) p.seq_past = max_past;  // past_len null: every batch has max_past (cases keep them equal)
    else p.past_len = past32.data();
    if (c.past_view == 1) { p.seq_past = max_past; p.past_k = p.present_k; p.past_v = p.present_v; }
  }
  if (!c.kv_len.empty()) p.kv_len = kvlen32.data();
  if (c.rotary) {
    p.rotary.cos_cache = cosb.bytes.data(); p.rotary.sin_cache = sinb.bytes.data();
    p.rotary.rotary_dim = c.rot_dim; p.rotary.cache_row_stride = half; p.rotary.interleaved = c.rotary == 2;
    if (c.pos_ids) { p.rotary.position_ids = pos_ids.data(); p.rotary.position_batch_stride = Sq; }
  }
  p.smooth_softmax = c.smooth;
  if (c.sink) p.head_sink = sinkb.bytes.data();
  p.scale = 1.f / std::sqrt(float(D));
  set_window(p, c.causal, c.window);
  const std::string err = check_params(p);
  if (!err.empty()) { std::printf("bad case %s: %s\n", c.name, err.c_str()); return 1; }
  const Buf q_before = qb;
  cpu::attention_forward(p, cpu::make_thread_parallel_for(2));

  const double tol = c.dt == ElemType::kFloat32 ? 2e-5 : c.dt == ElemType::kFloat16 ? 4e-3 : 3e-2;
  double worst = 0, cache_err = 0;
  int bad_cache = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t P = in_place ? c.past[b] : 0;
    const int64_t kend = std::min<int64_t>(P + Sq, c.kv_len.empty() ? P + Sq : c.kv_len[b]);
    const int64_t cap_pos = c.kv_len.empty() ? INT64_MAX / 4 : int64_t(c.kv_len[b]) - 1;
    for (int64_t h = 0; h < H; ++h) {
      // The keys and values batch b sees: past rows, then the new rows (keys rotated).
      std::vector<std::vector<double>> K(P + Sq, std::vector<double>(D)), V(P + Sq, std::vector<double>(D));
      for (int64_t j = 0; j < P + Sq; ++j) {
        for (int64_t d = 0; d < D; ++d) {
          const bool old = j < P;
          const size_t pi = ((b * H + h) * cap + j) * D + d, ni = ((b * H + h) * Sq + (j - P)) * D + d;
          K[j][d] = old ? pk0[pi] : k[ni];
          V[j][d] = old ? pv0[pi] : v[ni];
        }
        if (j >= P && c.rotary) {
          const int64_t s = j - P;
          rotate_ref(K[j], cosc, sinc, half, c.pos_ids ? pos_ids[b * Sq + s] : P + s, c.rotary == 2);
          for (auto& e : K[j]) e = round_dt(float(e), c.dt);
        }
      }
      if (in_place) {  // the cache: past rows untouched, new rows exact, the rest still NaN
        for (int64_t j = 0; j < cap; ++j)
          for (int64_t d = 0; d < D; ++d) {
            const size_t i = ((b * H + h) * cap + j) * D + d;
            const float gk = pkb.get(i), gv = pvb.get(i);
            if (j < P) bad_cache += !(std::memcmp(&gk, &pk0[i], 4) == 0 && std::memcmp(&gv, &pv0[i], 4) == 0);
            else if (j < P + Sq) {
              cache_err = std::max({cache_err, std::fabs(gk - K[j][d]) / (1 + std::fabs(K[j][d])), std::fabs(gv - V[j][d])});
            } else bad_cache += !(std::isnan(gk) && std::isnan(gv));
          }
      }
      for (int64_t hq = h * group; hq < (h + 1) * group; ++hq)
        for (int64_t i = 0; i < Sq; ++i) {
          std::vector<double> qr(D);
          for (int64_t d = 0; d < D; ++d) qr[d] = q[((b * N + hq) * Sq + i) * D + d];
          if (c.rotary) {
            rotate_ref(qr, cosc, sinc, half, c.pos_ids ? pos_ids[b * Sq + i] : P + i, c.rotary == 2);
            for (auto& e : qr) e = round_dt(float(e), c.dt);
          }
          const int64_t pos = std::min(P + i, cap_pos);
          std::vector<double> lg(kend, -INFINITY);
          double m = -INFINITY;
          for (int64_t j = 0; j < kend; ++j) {
            if (c.causal && j > pos) continue;
            if (c.window > 0 && pos - j > c.window - 1) continue;
            if (!c.causal && c.window > 0 && j - pos > c.window - 1) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qr[d] * K[j][d];
            lg[j] = dot * p.scale;
            m = std::max(m, lg[j]);
          }
          const bool has_sink = c.sink || c.smooth;
          const double sink = c.sink ? sinks[hq] : 0.0;
          if (has_sink) m = std::max(m, sink);
          double l = has_sink && std::isfinite(m) ? std::exp(sink - m) : 0;
          std::vector<double> o(D, 0.0);
          for (int64_t j = 0; j < kend; ++j) {
            if (lg[j] == -INFINITY) continue;
            const double e = std::exp(lg[j] - m);
            l += e;
            for (int64_t d = 0; d < D; ++d) o[d] += e * V[j][d];
          }
          for (int64_t d = 0; d < D; ++d) {
            const double want = l > 0 ? o[d] / l : 0, got = ob.get(((b * N + hq) * Sq + i) * D + d);
            worst = std::isfinite(got) ? std::max(worst, std::fabs(want - got)) : INFINITY;
          }
        }
    }
  }
  const bool q_kept = q_before.bytes == qb.bytes;
  const bool ok = worst <= tol && cache_err <= tol && bad_cache == 0 && q_kept;
  std::printf("%s %-44s %s: out error %.3g, new cache rows error %.3g, %d cache rows touched that must not be%s\n",
              ok ? "ok  " : "FAIL", c.name, elem_name(c.dt), worst, cache_err, bad_cache, q_kept ? "" : ", QUERY MODIFIED");
  return ok ? 0 : 1;
}

int check_gqa() {
  const ElemType f32 = ElemType::kFloat32, f16 = ElemType::kFloat16, bf16 = ElemType::kBFloat16;
  const GqaCase cases[] = {
      // name, B, N, KVH, Sq, D, past, kv_len, causal, window, rotary, rot_dim, pos_ids, smooth, sink, dtype, past_view
      {"prompt, right padding (kv_len 1, 5, 37)", 3, 8, 2, 37, 64, {}, {1, 5, 37}, true, -1, 0, 0, false, false, false, f32, 0},
      {"prompt, padding, local window 8", 3, 8, 2, 37, 64, {}, {1, 20, 37}, true, 8, 0, 0, false, false, false, f32, 0},
      {"prompt, padding, MQA, non-causal", 2, 4, 1, 40, 32, {}, {7, 40}, false, -1, 0, 0, false, false, false, f32, 0},
      {"prompt, rotary half 32 of 64, padding", 2, 8, 2, 33, 64, {}, {9, 33}, true, -1, 1, 32, false, false, false, f32, 0},
      {"prompt in place (past 0), interleaved rotary", 2, 8, 2, 20, 64, {0, 0}, {}, true, -1, 2, 48, false, false, false, f32, 0},
      {"decode, past 0/7/300, GQA 4:1", 3, 8, 2, 1, 64, {0, 7, 300}, {}, true, -1, 0, 0, false, false, false, f32, 0},
      {"decode, past 1100/2000 (key split), rotary", 2, 32, 8, 1, 128, {1100, 2000}, {}, true, -1, 1, 128, false, false, false, f32, 1},
      {"decode, MQA, past 1500 (key split), window 100", 1, 8, 1, 1, 64, {1500}, {}, true, 100, 0, 0, false, false, false, f32, 0},
      {"decode, MHA (4:4), past 2000 (key split), sink", 1, 4, 4, 1, 64, {2000}, {}, true, -1, 0, 0, false, false, true, f32, 0},
      {"S_q 5 with past 3/60, causal, aliased past", 2, 8, 2, 5, 64, {3, 60}, {}, true, -1, 0, 0, false, false, false, f32, 1},
      {"S_q 5 with past, window 4, interleaved, pos ids", 2, 8, 2, 5, 64, {3, 60}, {}, true, 4, 2, 32, true, false, false, f32, 0},
      {"S_q 6 with past, kv_len cuts new rows", 2, 8, 2, 6, 64, {10, 30}, {12, 36}, true, -1, 1, 64, false, false, false, f32, 0},
      {"past_len null: seq_past for all batches", 2, 8, 2, 3, 64, {25, 25}, {}, true, -1, 1, 16, false, false, false, f32, 2},
      {"smooth_softmax, prompt with padding", 2, 8, 2, 30, 64, {}, {4, 30}, true, -1, 0, 0, false, true, false, f32, 0},
      {"head_sink, S_q 4 with past, window 3", 2, 8, 2, 4, 64, {5, 50}, {}, true, 3, 1, 64, false, false, true, f32, 0},
      {"head_sink, prompt kv_len 0 batch (no keys)", 2, 4, 2, 9, 32, {}, {0, 9}, true, -1, 0, 0, false, false, true, f32, 0},
      {"float16: decode past 1200, rotary, sink", 2, 8, 2, 1, 64, {1200, 33}, {}, true, -1, 1, 64, false, false, true, f16, 1},
      {"float16: prompt padding, interleaved", 2, 8, 2, 24, 64, {}, {3, 24}, true, -1, 2, 64, false, false, false, f16, 0},
      {"bfloat16: S_q 3 with past, smooth", 2, 8, 2, 3, 64, {9, 40}, {}, true, -1, 1, 32, false, true, false, bf16, 0},
  };
  std::mt19937 rng(7);
  int failures = 0;
  for (const GqaCase& c : cases) failures += run_gqa(c, rng);
  return failures;
}

int decode_bench(int argc, char** argv) {
  if (argc < 8) { std::printf("usage: kernel_check decode B N KVH D past threads [reps [inplace]]\n"); return 2; }
  const int64_t b = std::atoll(argv[2]), n = std::atoll(argv[3]), kvh = std::atoll(argv[4]), d = std::atoll(argv[5]),
                past = std::atoll(argv[6]);
  const int threads = std::atoi(argv[7]), reps = argc > 8 ? std::atoi(argv[8]) : 50;
  const bool in_place = argc > 9 && std::string(argv[9]) == "inplace";
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  auto fill = [&](size_t sz) { std::vector<float> x(sz); for (auto& e : x) e = nd(rng); return x; };
  const int64_t rows = in_place ? past + 1 : past;
  std::vector<float> q = fill(b * n * d), k = fill(b * kvh * d), v = fill(b * kvh * d), pk = fill(b * kvh * rows * d),
                     pv = fill(b * kvh * rows * d), out(b * n * d);
  auto v4 = [](std::vector<float>& x, int64_t heads, int64_t seq, int64_t dim) {
    TensorView t; t.data = x.data(); t.batch_stride = heads * seq * dim; t.head_stride = seq * dim; t.seq_stride = dim; return t;
  };
  AttentionParams p;
  p.batch = b; p.num_heads = n; p.kv_num_heads = kvh; p.seq_q = 1; p.seq_kv = 1; p.seq_past = past;
  p.head_dim = p.head_dim_v = d;
  p.q = v4(q, n, 1, d); p.k = v4(k, kvh, 1, d); p.v = v4(v, kvh, 1, d); p.out = v4(out, n, 1, d);
  std::vector<int32_t> past_len(b, int32_t(past));
  if (in_place) {
    p.kv_capacity = rows; p.present_k = v4(pk, kvh, rows, d); p.present_v = v4(pv, kvh, rows, d);
    p.past_k = p.present_k; p.past_v = p.present_v; p.past_len = past_len.data();
  } else {
    p.past_k = v4(pk, kvh, past, d); p.past_v = v4(pv, kvh, past, d);
  }
  p.scale = 1.f / std::sqrt(float(d));
  set_window(p, true, -1);
  const std::string err = check_params(p);
  if (!err.empty()) { std::printf("bad: %s\n", err.c_str()); return 2; }
  const auto pf = cpu::make_thread_parallel_for(threads);
  for (int i = 0; i < 5; ++i) cpu::attention_forward(p, pf);
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu::attention_forward(p, pf);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("decode B=%ld N=%ld/%ld D=%ld past=%ld %s threads=%d: median %.3f ms, min %.3f ms; isa=%s\n", long(b), long(n),
              long(kvh), long(d), long(past), in_place ? "in-place" : "past tensors", threads, ms[ms.size() / 2], ms[0],
              cpu::selected_isa());
  return 0;
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
  if (argc > 1 && std::string(argv[1]) == "decode") return decode_bench(argc, argv);
  return check();
}
