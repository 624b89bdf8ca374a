// fastattn_onnx._kernels: the kernels on NumPy arrays, with the op's contract.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

#include "attention_params.h"
#include "cpu/cpu_attention.h"
#include "cpu/thread_pool.h"

namespace py = pybind11;
using fastattn::AttentionParams;
using fastattn::ElemType;
using fastattn::MaskType;
using fastattn::TensorView;

namespace {

// bfloat16 arrives as ml_dtypes.bfloat16 arrays, or as uint16 arrays holding the bits when the
// caller passes dtype="bfloat16" (for NumPy without ml_dtypes).
// dtypes are compared by value, not identity: an unpickled array (multiprocessing) carries a
// dtype object of its own, and a non-native byte order must not pass as float32.
ElemType elem_type_of(const py::array& a, const char* name, bool uint16_is_bf16) {
  if (a.dtype().equal(py::dtype::of<float>())) return ElemType::kFloat32;
  if (a.dtype().equal(py::dtype("float16"))) return ElemType::kFloat16;
  if (std::string(py::str(a.dtype())) == "bfloat16") return ElemType::kBFloat16;
  if (uint16_is_bf16 && a.dtype().equal(py::dtype::of<uint16_t>())) return ElemType::kBFloat16;
  throw py::type_error(std::string(name) + ": dtype must be float32, float16 or bfloat16, got " +
                       std::string(py::str(a.dtype())));
}

// Logical [B, H, S, D] view of a C-contiguous 3D [B, S, H*D] or 4D [B, H, S, D] array.
TensorView view_of(py::array& a, int64_t heads) {
  TensorView v;
  v.data = const_cast<void*>(a.data());  // inputs are only read; outputs are checked writeable
  if (a.ndim() == 3) {
    const int64_t hd = a.shape(2);
    v.batch_stride = a.shape(1) * hd;
    v.head_stride = hd / heads;
    v.seq_stride = hd;
  } else {
    v.batch_stride = a.shape(1) * a.shape(2) * a.shape(3);
    v.head_stride = a.shape(2) * a.shape(3);
    v.seq_stride = a.shape(3);
  }
  return v;
}

py::array contiguous(const py::array& a, const char* name) {
  py::array c = py::array::ensure(a, py::array::c_style);
  if (!c) throw py::type_error(std::string(name) + " must be an array");
  return c;
}

// A caller-provided output: exactly this dtype and shape, C-contiguous and writeable (the
// kernel writes into it in place, so tests can poison it first).
py::array checked_output(const py::array& a, const py::dtype& dtype, const std::vector<py::ssize_t>& shape,
                         const char* name) {
  if (!a.dtype().equal(dtype)) throw py::type_error(std::string(name) + " must have the query's dtype");
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()) ||
      !std::equal(shape.begin(), shape.end(), a.shape()))
    throw py::value_error(std::string(name) + " has the wrong shape");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  return a;
}

py::object attention(py::array q, py::array k, py::array v, std::optional<int64_t> num_heads,
                     std::optional<int64_t> kv_num_heads, std::optional<double> scale, bool causal,
                     int64_t window_size, double softcap, std::optional<py::array> attn_bias,
                     std::optional<py::array> key_padding_mask, std::optional<py::array> past_key,
                     std::optional<py::array> past_value, bool return_present, int num_threads,
                     std::optional<py::array> out_arg, std::optional<py::array> present_key_arg,
                     std::optional<py::array> present_value_arg, std::optional<std::string> dtype_name) {
  if (dtype_name && *dtype_name != "bfloat16")
    throw py::value_error("dtype may only be \"bfloat16\" (to read uint16 arrays as bfloat16 bits)");
  const bool bf16_bits = dtype_name.has_value();
  q = contiguous(q, "query"); k = contiguous(k, "key"); v = contiguous(v, "value");
  const ElemType t = elem_type_of(q, "query", bf16_bits);
  if (elem_type_of(k, "key", bf16_bits) != t || elem_type_of(v, "value", bf16_bits) != t)
    throw py::type_error("query, key and value must have the same dtype");
  const int rank = static_cast<int>(q.ndim());
  if (rank != 3 && rank != 4) throw py::value_error("query must be 3D [B, S, H*D] or 4D [B, H, S, D]");
  if (k.ndim() != rank || v.ndim() != rank) throw py::value_error("key and value must have the query's rank");
  AttentionParams p;
  p.dtype = t;
  p.batch = q.shape(0);
  if (rank == 3) {
    if (!num_heads) throw py::value_error("num_heads is required for 3D inputs");
    p.num_heads = *num_heads;
    p.kv_num_heads = kv_num_heads.value_or(p.num_heads);
    if (p.num_heads <= 0 || p.kv_num_heads <= 0) throw py::value_error("num_heads and kv_num_heads must be >= 1");
    if (q.shape(2) % p.num_heads || k.shape(2) % p.kv_num_heads || v.shape(2) % p.kv_num_heads)
      throw py::value_error("hidden sizes must be divisible by the head counts");
    p.seq_q = q.shape(1); p.seq_kv = k.shape(1);
    p.head_dim = q.shape(2) / p.num_heads;
    if (k.shape(2) / p.kv_num_heads != p.head_dim) throw py::value_error("query and key head sizes differ");
    p.head_dim_v = v.shape(2) / p.kv_num_heads;
  } else {
    p.num_heads = q.shape(1); p.kv_num_heads = k.shape(1);
    if (num_heads && *num_heads != p.num_heads) throw py::value_error("num_heads disagrees with query.shape[1]");
    if (kv_num_heads && *kv_num_heads != p.kv_num_heads) throw py::value_error("kv_num_heads disagrees with key.shape[1]");
    p.seq_q = q.shape(2); p.seq_kv = k.shape(2);
    p.head_dim = q.shape(3);
    if (k.shape(3) != p.head_dim) throw py::value_error("query and key head sizes differ");
    p.head_dim_v = v.shape(3);
    if (v.shape(1) != p.kv_num_heads) throw py::value_error("value heads differ from key heads");
  }
  if (k.shape(0) != p.batch || v.shape(0) != p.batch) throw py::value_error("batch sizes differ");
  if ((rank == 3 ? v.shape(1) : v.shape(2)) != p.seq_kv) throw py::value_error("key and value lengths differ");
  p.q = view_of(q, p.num_heads); p.k = view_of(k, p.kv_num_heads); p.v = view_of(v, p.kv_num_heads);

  py::array pk, pv;
  if (past_key.has_value() != past_value.has_value()) throw py::value_error("give both past_key and past_value or neither");
  if (past_key) {
    pk = contiguous(*past_key, "past_key"); pv = contiguous(*past_value, "past_value");
    if (elem_type_of(pk, "past_key", bf16_bits) != t || elem_type_of(pv, "past_value", bf16_bits) != t)
      throw py::type_error("past tensors must have the query's dtype");
    if (pk.ndim() != 4 || pk.shape(0) != p.batch || pk.shape(1) != p.kv_num_heads || pk.shape(3) != p.head_dim)
      throw py::value_error("past_key must be [B, kv_num_heads, S_past, D]");
    if (pv.ndim() != 4 || pv.shape(0) != p.batch || pv.shape(1) != p.kv_num_heads || pv.shape(2) != pk.shape(2) ||
        pv.shape(3) != p.head_dim_v)
      throw py::value_error("past_value must be [B, kv_num_heads, S_past, Dv]");
    p.seq_past = pk.shape(2);
    if (p.seq_past > 0) { p.past_k = view_of(pk, p.kv_num_heads); p.past_v = view_of(pv, p.kv_num_heads); }
  }
  const int64_t s_total = p.seq_total();

  py::array bias;
  if (attn_bias) {
    bias = contiguous(*attn_bias, "attn_bias");
    if (elem_type_of(bias, "attn_bias", bf16_bits) != t) throw py::type_error("attn_bias must have the query's dtype");
    if (bias.ndim() > 4) throw py::value_error("attn_bias must have rank <= 4");
    int64_t dims[4] = {1, 1, 1, 1}, strides[4] = {0, 0, 0, 0}, want[4] = {p.batch, p.num_heads, p.seq_q, s_total};
    const int off = 4 - static_cast<int>(bias.ndim());
    for (int i = 0; i < bias.ndim(); ++i) { dims[off + i] = bias.shape(i); strides[off + i] = bias.strides(i) / bias.itemsize(); }
    for (int i = 0; i < 4; ++i) {
      if (dims[i] != want[i] && dims[i] != 1) throw py::value_error("attn_bias is not broadcastable to [B, num_heads, S_q, S_total]");
      if (dims[i] == 1) strides[i] = 0;
    }
    p.bias = bias.data();
    p.bias_batch_stride = strides[0]; p.bias_head_stride = strides[1]; p.bias_row_stride = strides[2]; p.bias_col_stride = strides[3];
  }
  py::array mask;
  if (key_padding_mask) {
    mask = contiguous(*key_padding_mask, "key_padding_mask");
    const auto kind = mask.dtype().kind();
    if (kind == 'b') p.mask_type = MaskType::kBool;
    else if (kind == 'i' && mask.itemsize() == 4) p.mask_type = MaskType::kInt32;
    else if (kind == 'i' && mask.itemsize() == 8) p.mask_type = MaskType::kInt64;
    else throw py::type_error("key_padding_mask must be bool, int32 or int64");
    if (mask.ndim() != 2 || mask.shape(0) != p.batch || mask.shape(1) != s_total)
      throw py::value_error("key_padding_mask must be [B, S_total] = [" + std::to_string(p.batch) + ", " + std::to_string(s_total) + "]");
    p.key_padding_mask = mask.data();
    p.mask_batch_stride = s_total;
  }
  p.scale = scale ? static_cast<float>(*scale) : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  p.causal = causal;
  p.window_size = window_size;
  p.softcap = static_cast<float>(softcap);

  std::vector<py::ssize_t> out_shape = rank == 3 ? std::vector<py::ssize_t>{p.batch, p.seq_q, p.num_heads * p.head_dim_v}
                                                 : std::vector<py::ssize_t>{p.batch, p.num_heads, p.seq_q, p.head_dim_v};
  py::array out = out_arg ? checked_output(*out_arg, q.dtype(), out_shape, "out") : py::array(q.dtype(), out_shape);
  p.out = view_of(out, p.num_heads);
  // Presents are computed when asked for or when preallocated; then the result is a tuple.
  return_present = return_present || present_key_arg || present_value_arg;
  py::array present_k, present_v;
  if (return_present) {
    const std::vector<py::ssize_t> pk_shape{p.batch, p.kv_num_heads, s_total, p.head_dim};
    const std::vector<py::ssize_t> pv_shape{p.batch, p.kv_num_heads, s_total, p.head_dim_v};
    present_k = present_key_arg ? checked_output(*present_key_arg, q.dtype(), pk_shape, "present_key")
                                : py::array(q.dtype(), pk_shape);
    present_v = present_value_arg ? checked_output(*present_value_arg, q.dtype(), pv_shape, "present_value")
                                  : py::array(q.dtype(), pv_shape);
    p.present_k = view_of(present_k, p.kv_num_heads);
    p.present_v = view_of(present_v, p.kv_num_heads);
  }
  const std::string err = fastattn::check_params(p);
  if (!err.empty()) throw py::value_error(err);
  {
    py::gil_scoped_release release;
    fastattn::cpu::attention_forward(p, fastattn::cpu::make_thread_parallel_for(num_threads));
  }
  if (return_present) return py::make_tuple(out, present_k, present_v);
  return std::move(out);
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "FastAttention kernels on NumPy arrays";
  m.def("attention", &attention, py::arg("query"), py::arg("key"), py::arg("value"), py::kw_only(),
        py::arg("num_heads") = py::none(), py::arg("kv_num_heads") = py::none(), py::arg("scale") = py::none(),
        py::arg("causal") = false, py::arg("window_size") = -1, py::arg("softcap") = 0.0,
        py::arg("attn_bias") = py::none(), py::arg("key_padding_mask") = py::none(),
        py::arg("past_key") = py::none(), py::arg("past_value") = py::none(),
        py::arg("return_present") = false, py::arg("num_threads") = 0, py::arg("out") = py::none(),
        py::arg("present_key") = py::none(), py::arg("present_value") = py::none(), py::arg("dtype") = py::none(),
        "FastAttention forward on the CPU with the com.fastattention::FastAttention contract.\n"
        "out / present_key / present_value: optional preallocated (C-contiguous, writeable) outputs;\n"
        "giving a present returns (out, present_key, present_value) as return_present=True does.\n"
        "bfloat16: ml_dtypes.bfloat16 arrays, or uint16 arrays of the bits with dtype=\"bfloat16\".");
  m.def("cpu_isa", &fastattn::cpu::selected_isa, "The vector ISA the CPU kernel selected on this machine");
  m.def("cpu_compiled_isas", &fastattn::cpu::compiled_isas, "The vector ISAs compiled into the CPU kernel");
}
