// fastattn_onnx._kernels: the kernels on NumPy arrays, with the op's contract (core/op_contract.h):
// this file only turns arrays and keywords into the contract's descriptions and back.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ascend/fia_plan.h"
#include "cpu/cpu_attention.h"
#include "cpu/thread_pool.h"
#include "dispatch.h"
#include "op_contract.h"

namespace py = pybind11;
using fastattn::core::DType;
using fastattn::core::TensorArg;
using fastattn::core::TensorDesc;
namespace core = fastattn::core;

namespace {

// dtypes are compared by value, not identity: an unpickled array (multiprocessing) carries a
// dtype object of its own, and a non-native byte order must not pass as float32. bfloat16
// arrives as ml_dtypes.bfloat16 arrays, or as uint16 arrays holding the bits when the caller
// passes dtype="bfloat16" (for NumPy without ml_dtypes).
DType dtype_of(const py::array& a, bool uint16_is_bf16) {
  const py::dtype t = a.dtype();
  if (t.equal(py::dtype::of<float>())) return DType::kFloat32;
  if (t.equal(py::dtype("float16"))) return DType::kFloat16;
  if (std::string(py::str(t)) == "bfloat16") return DType::kBFloat16;
  if (t.equal(py::dtype::of<uint16_t>())) return uint16_is_bf16 ? DType::kBFloat16 : DType::kUInt16;
  if (t.equal(py::dtype::of<double>())) return DType::kFloat64;
  if (t.equal(py::dtype::of<bool>())) return DType::kBool;
  if (t.equal(py::dtype::of<int32_t>())) return DType::kInt32;
  if (t.equal(py::dtype::of<int64_t>())) return DType::kInt64;
  if (t.equal(py::dtype::of<int8_t>())) return DType::kInt8;
  if (t.equal(py::dtype::of<uint8_t>())) return DType::kUInt8;
  if (t.equal(py::dtype::of<int16_t>())) return DType::kInt16;
  return DType::kOther;
}

DType dtype_named(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(DType::kOther); ++i)
    if (name == core::dtype_name(static_cast<DType>(i))) return static_cast<DType>(i);
  return DType::kOther;
}

// Anything NumPy turns into an array (a list, a CPU torch tensor) is taken as np.asarray would;
// what it cannot turn into one is a TypeError naming the argument.
py::array contiguous(const py::object& a, const char* name) {
  py::array c = py::array::ensure(a, py::array::c_style);
  if (!c) {
    PyErr_Clear();
    throw py::type_error(std::string(name) + " must be an array (NumPy, or anything numpy.asarray accepts), got " +
                         std::string(py::str(py::type::of(a).attr("__name__"))));
  }
  return c;
}

// The bytes an array's elements span (inputs and outputs must not overlap: the kernel writes
// outputs while it still reads inputs).
std::pair<const char*, const char*> extent(const py::array& a) {
  const char* lo = static_cast<const char*>(a.data());
  const char* hi = lo;
  if (a.size() == 0) return {lo, lo};
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    const py::ssize_t step = (a.shape(i) - 1) * a.strides(i);
    (step < 0 ? lo : hi) += step;
  }
  return {lo, hi + a.itemsize()};
}

bool overlap(const py::array& a, const py::array& b) {
  const auto [a0, a1] = extent(a);
  const auto [b0, b1] = extent(b);
  return a0 < b1 && b0 < a1;
}

TensorArg arg_of(const py::array& a, bool uint16_is_bf16) {
  TensorArg t;
  t.desc.present = true;
  t.desc.dtype = dtype_of(a, uint16_is_bf16);
  t.desc.rank = static_cast<int>(a.ndim());
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    t.desc.dims.push_back(a.shape(i));
    t.strides.push_back(a.strides(i) / static_cast<py::ssize_t>(a.itemsize()));
  }
  t.data = const_cast<void*>(a.data());  // inputs are only read; outputs are checked writeable
  return t;
}

void raise(const core::Rule& rule) {
  if (rule.about_type) throw py::type_error(rule.text);
  throw py::value_error(rule.text);
}

// Attributes from Python values by name (absent: not in the dict, or None), through the one
// reader: a Python int (or bool) is an integer attribute, a float a float one.
core::OpAttributes read_attributes(const py::dict& values) {
  auto get = [&](const char* name) { return values.contains(name) ? py::object(values[name]) : py::object(py::none()); };
  core::AttributeSource source{
      [get](const char* name) {
        const py::object v = get(name);
        if (v.is_none()) return core::AttrKind::kAbsent;
        if (py::isinstance<py::int_>(v)) return core::AttrKind::kInt;  // bool is an int too
        if (py::isinstance<py::float_>(v)) return core::AttrKind::kFloat;
        return core::AttrKind::kOther;
      },
      [get](const char* name) { return get(name).cast<int64_t>(); },
      [get](const char* name) { return static_cast<float>(get(name).cast<double>()); },
      [&values] {
        std::vector<std::string> names;
        for (const auto& item : values) names.push_back(py::str(item.first));
        return names;
      }};
  core::OpAttributes a;
  if (auto rule = core::read_attributes(source, &a); rule.broken()) raise(rule);
  return a;
}


// A caller-provided output: exactly this dtype and shape, C-contiguous and writeable (the
// kernel writes into it in place, so tests can poison it first).
py::array checked_output(const py::object& given, const py::dtype& dtype, const std::vector<int64_t>& shape,
                         const char* name) {
  if (!py::isinstance<py::array>(given))
    throw py::type_error(std::string(name) + " must be a NumPy array (the kernel writes into it)");
  const py::array a = py::reinterpret_borrow<py::array>(given);
  if (!a.dtype().equal(dtype)) throw py::type_error(std::string(name) + " must have the query's dtype");
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()) || !std::equal(shape.begin(), shape.end(), a.shape()))
    throw py::value_error(std::string(name) + " has the wrong shape");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  return a;
}

// The attributes arrive as Python objects and go through the contract's reader, so a wrong type
// (window_size=2.0) is the same sentence as on the ONNX Runtime paths, not pybind's signature.
py::object attention(py::object q, py::object k, py::object v, py::object num_heads, py::object kv_num_heads,
                     py::object scale, py::object causal, py::object window_size, py::object softcap,
                     std::optional<py::object> attn_bias,
                     std::optional<py::object> key_padding_mask, std::optional<py::object> past_key,
                     std::optional<py::object> past_value, bool return_present, int num_threads,
                     std::optional<py::object> out_arg, std::optional<py::object> present_key_arg,
                     std::optional<py::object> present_value_arg, std::optional<std::string> dtype_name) {
  if (dtype_name && *dtype_name != "bfloat16")
    throw py::value_error("dtype may only be \"bfloat16\" (to read uint16 arrays as bfloat16 bits)");
  const bool bf16_bits = dtype_name.has_value();
  py::dict values;
  // Python numbers as the attribute types they stand for: integers (and NumPy integers, bools)
  // for the integer attributes, any real number for the float ones; anything else is passed on
  // for the reader to name.
  auto integer = [](const py::object& x) {
    return !x.is_none() && PyIndex_Check(x.ptr()) ? py::object(py::int_(PyNumber_Index(x.ptr()), false)) : x;
  };
  auto real = [](const py::object& x) {
    const bool number = !x.is_none() && !py::isinstance<py::str>(x) && py::hasattr(x, "__float__");
    return number ? py::object(py::float_(x)) : x;
  };
  values["num_heads"] = integer(num_heads);
  values["kv_num_heads"] = integer(kv_num_heads);
  values["scale"] = real(scale);
  values["causal"] = integer(causal);
  values["window_size"] = integer(window_size);
  values["softcap"] = real(softcap);
  const core::OpAttributes attrs = read_attributes(values);

  // Arrays stay alive (and contiguous copies of strided ones exist) until the kernel is done.
  py::array arrays[core::kNumInputs];
  const std::optional<py::object>* given[core::kNumInputs] = {nullptr, nullptr, nullptr, &attn_bias,
                                                               &key_padding_mask, &past_key, &past_value};
  const py::object* required[3] = {&q, &k, &v};
  TensorArg in[core::kNumInputs];
  TensorDesc in_desc[core::kNumInputs];
  for (int i = 0; i < core::kNumInputs; ++i) {
    if (given[i] && !given[i]->has_value()) continue;
    if (!given[i] && required[i]->is_none()) throw py::type_error(std::string(core::kInputNames[i]) + " is required");
    arrays[i] = contiguous(given[i] ? **given[i] : *required[i], core::kInputNames[i]);
    in[i] = arg_of(arrays[i], bf16_bits);
    in_desc[i] = in[i].desc;
  }
  TensorDesc out_desc[core::kNumOutputs];
  if (auto rule = core::infer_outputs(attrs, in_desc, out_desc); rule.broken()) raise(rule);

  // Presents are computed when asked for or when preallocated; then the result is a tuple.
  return_present = return_present || present_key_arg || present_value_arg;
  const std::optional<py::object>* out_given[core::kNumOutputs] = {&out_arg, &present_key_arg, &present_value_arg};
  py::array outputs[core::kNumOutputs];
  TensorArg out[core::kNumOutputs];
  for (int i = 0; i < core::kNumOutputs; ++i) {
    if (i != core::kOutput && !return_present) continue;
    const auto& dims = out_desc[i].dims;
    const py::dtype dtype = arrays[core::kQuery].dtype();
    outputs[i] = out_given[i]->has_value() ? checked_output(**out_given[i], dtype, dims, core::kOutputNames[i])
                                           : py::array(dtype, dims);
    for (const py::array& input : arrays)
      if (out_given[i]->has_value() && input && overlap(outputs[i], input))
        throw py::value_error(std::string(core::kOutputNames[i]) + " must not share memory with an input");
    for (int j = 0; j < i; ++j)
      if (out_given[i]->has_value() && outputs[j] && overlap(outputs[i], outputs[j]))
        throw py::value_error(std::string(core::kOutputNames[i]) + " must not share memory with " +
                              core::kOutputNames[j]);
    out[i] = arg_of(outputs[i], bf16_bits);
  }
  fastattn::AttentionParams p;
  std::string rule = core::fill_params(attrs, in, out, fastattn::Device{}, &p);
  if (rule.empty()) {
    py::gil_scoped_release release;
    const fastattn::LaunchContext ctx{fastattn::Device{}, nullptr, fastattn::cpu::make_thread_parallel_for(num_threads)};
    rule = fastattn::attention_forward(p, ctx);
  }
  if (!rule.empty()) throw py::value_error(rule);
  if (return_present) return py::make_tuple(outputs[0], outputs[1], outputs[2]);
  return std::move(outputs[0]);
}

// A tensor on an accelerator as fastattn_onnx/device_tensors.py describes it: (data pointer,
// dtype name, dims, strides in elements). Python keeps the memory alive during the call.
TensorArg device_arg(const py::tuple& t) {
  TensorArg a;
  a.desc.present = true;
  a.data = reinterpret_cast<void*>(t[0].cast<uintptr_t>());
  a.desc.dtype = dtype_named(t[1].cast<std::string>());
  a.desc.dims = t[2].cast<std::vector<int64_t>>();
  a.desc.rank = static_cast<int>(a.desc.dims.size());
  a.strides = t[3].cast<std::vector<int64_t>>();
  if (a.strides.size() != a.desc.dims.size()) throw py::value_error("device tensor strides do not match its rank");
  return a;
}

// The op on tensors already on a device (CUDA now), enqueued on `stream` (the caller's, e.g.
// torch's current stream): returns when the kernel is launched, not when it is done. Outputs
// are allocated by the caller with the shapes infer_outputs gives.
void attention_on_device(const py::dict& attributes, const std::vector<std::optional<py::tuple>>& inputs,
                         const std::vector<std::optional<py::tuple>>& outputs, const std::string& device,
                         int ordinal, uintptr_t stream) {
  const core::OpAttributes attrs = read_attributes(attributes);
  fastattn::Device where{fastattn::DeviceKind::kCpu, ordinal};
  if (device == "cuda") where.kind = fastattn::DeviceKind::kCuda;
  else throw py::value_error("device tensors must be on a CUDA device, got " + device);
  TensorArg in[core::kNumInputs], out[core::kNumOutputs];
  TensorDesc in_desc[core::kNumInputs], out_desc[core::kNumOutputs];
  for (size_t i = 0; i < inputs.size() && i < core::kNumInputs; ++i)
    if (inputs[i]) in_desc[i] = (in[i] = device_arg(*inputs[i])).desc;
  if (auto rule = core::infer_outputs(attrs, in_desc, out_desc); rule.broken()) raise(rule);
  for (size_t i = 0; i < outputs.size() && i < core::kNumOutputs; ++i) {
    if (!outputs[i]) continue;
    out[i] = device_arg(*outputs[i]);
    if (out[i].desc.dims != out_desc[i].dims || out[i].desc.dtype != out_desc[i].dtype)
      throw py::value_error(std::string(core::kOutputNames[i]) + " has the wrong shape or dtype");
  }
  fastattn::AttentionParams p;
  std::string rule = core::fill_params(attrs, in, out, where, &p);
  if (rule.empty()) {
    py::gil_scoped_release release;
    const fastattn::LaunchContext ctx{where, reinterpret_cast<void*>(stream),
                                      [](int64_t n, const std::function<void(int64_t)>& fn) {
                                        for (int64_t i = 0; i < n; ++i) fn(i);
                                      }};
    rule = fastattn::attention_forward(p, ctx);
  }
  if (!rule.empty()) throw py::value_error(rule);
}

// The contract's shape inference for onnx's schema (python/fastattn_onnx/schema.py): inputs are
// None or (dtype name, dims with -1 for unknown); returns per output None or
// (dtype name, dims, [(input, dim) each dim equals, or (-1, -1)]).
py::list infer_outputs(const py::dict& attributes, const std::vector<std::optional<py::tuple>>& inputs) {
  const core::OpAttributes attrs = read_attributes(attributes);
  TensorDesc in[core::kNumInputs], out[core::kNumOutputs];
  for (size_t i = 0; i < inputs.size() && i < core::kNumInputs; ++i) {
    if (!inputs[i]) continue;
    const py::tuple& t = *inputs[i];
    in[i].present = true;
    in[i].dtype = dtype_named(t[0].cast<std::string>());
    if (!t[1].is_none()) {
      in[i].dims = t[1].cast<std::vector<int64_t>>();
      in[i].rank = static_cast<int>(in[i].dims.size());
    }
  }
  if (auto rule = core::infer_outputs(attrs, in, out); rule.broken()) raise(rule);
  py::list result;
  for (const TensorDesc& o : out) {
    if (o.rank < 0) result.append(py::none());
    else result.append(py::make_tuple(core::dtype_name(o.dtype), o.dims, o.same_as));
  }
  return result;
}

// The Ascend plan (kernels/ascend/fia_plan.h) for a node described by shapes, as the EP's NPU
// backend would make it: inputs are None or (dtype name, dims[, element strides]); the contract
// checks them and fills AttentionParams (device NPU, placeholder pointers: nothing is read).
// key_visible ([B, S_total], nonzero = visible) and kv_len carry the data the plan reads.
// Returns {"reason": ""} plus the plan's fields, or {"reason": why the operator declines}.
py::dict ascend_plan(const py::dict& attributes, const std::vector<std::optional<py::tuple>>& inputs,
                     bool return_present, std::optional<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>> key_visible,
                     std::optional<std::vector<int32_t>> kv_len, bool allow_low_precision,
                     const std::string& low_precision_dtype) {
  static char placeholder;  // marks a present tensor; never read
  const core::OpAttributes attrs = read_attributes(attributes);
  TensorArg in[core::kNumInputs], out[core::kNumOutputs];
  TensorDesc in_desc[core::kNumInputs], out_desc[core::kNumOutputs];
  for (size_t i = 0; i < inputs.size() && i < core::kNumInputs; ++i) {
    if (!inputs[i]) continue;
    const py::tuple& t = *inputs[i];
    in[i].desc.present = true;
    in[i].desc.dtype = dtype_named(t[0].cast<std::string>());
    in[i].desc.dims = t[1].cast<std::vector<int64_t>>();
    in[i].desc.rank = static_cast<int>(in[i].desc.dims.size());
    if (t.size() > 2 && !t[2].is_none()) in[i].strides = t[2].cast<std::vector<int64_t>>();
    if (!in[i].strides.empty() && in[i].strides.size() != in[i].desc.dims.size())
      throw py::value_error(std::string(core::kInputNames[i]) + " strides do not match its rank");
    in[i].data = &placeholder;
    in_desc[i] = in[i].desc;
  }
  if (auto rule = core::infer_outputs(attrs, in_desc, out_desc); rule.broken()) raise(rule);
  for (int i = 0; i < core::kNumOutputs; ++i) {
    if (i != core::kOutput && !return_present) continue;
    out[i].desc = out_desc[i];
    out[i].data = &placeholder;
  }
  fastattn::AttentionParams p;
  if (std::string rule = core::fill_params(attrs, in, out, fastattn::Device{fastattn::DeviceKind::kNpu, 0}, &p);
      !rule.empty())
    throw py::value_error(rule);
  namespace ascend = fastattn::ascend;
  ascend::PlanInputs plan_in;
  plan_in.allow_low_precision = allow_low_precision;
  if (low_precision_dtype == "bfloat16") plan_in.low_precision_type = fastattn::ElemType::kBFloat16;
  else if (low_precision_dtype != "float16") throw py::value_error("low_precision_dtype must be float16 or bfloat16");
  if (key_visible) {
    if (!p.key_padding_mask) throw py::value_error("key_visible is given but the node has no key_padding_mask");
    if (key_visible->size() != p.batch * p.seq_total())
      throw py::value_error("key_visible must be [B, S_total] = [" + std::to_string(p.batch) + ", " +
                            std::to_string(p.seq_total()) + "]");
    plan_in.key_visible.assign(key_visible->data(), key_visible->data() + key_visible->size());
    for (uint8_t& v : plan_in.key_visible) v = v != 0;
  } else if (p.key_padding_mask) {
    throw py::value_error("the plan reads key_padding_mask's values: pass key_visible");
  }
  if (kv_len) {
    if (static_cast<int64_t>(kv_len->size()) != p.batch) throw py::value_error("kv_len must hold one entry per batch");
    plan_in.kv_len = *kv_len;
    p.kv_len = plan_in.kv_len.data();  // host memory: the plan only asks whether it is given
  }
  ascend::FiaPlan plan;
  py::dict d;
  const std::string why = ascend::make_plan(p, plan_in, &plan);
  if (why.rfind("plan:", 0) == 0) throw py::value_error(why);
  d["reason"] = why;
  if (!why.empty()) return d;
  d["input_layout"] = plan.input_layout;
  d["num_heads"] = plan.num_heads;
  d["num_key_value_heads"] = plan.num_key_value_heads;
  d["scale_value"] = plan.scale_value;
  d["pre_tokens"] = plan.pre_tokens;
  d["next_tokens"] = plan.next_tokens;
  d["sparse_mode"] = plan.sparse_mode;
  d["inner_precise"] = plan.inner_precise;
  d["actual_seq_lengths"] = plan.actual_seq_lengths;
  d["actual_seq_lengths_kv"] = plan.actual_seq_lengths_kv;
  d["kv_padding_size"] = plan.has_kv_padding_size ? py::object(py::int_(plan.kv_padding_size)) : py::object(py::none());
  const char* masks[] = {"none", "compressed", "explicit"};
  d["mask"] = masks[static_cast<int>(plan.mask)];
  d["mask_shape"] = plan.mask_shape;
  if (plan.mask == ascend::MaskKind::kExplicit) {
    const std::vector<uint8_t> m = ascend::explicit_mask(p, plan_in);
    py::array_t<uint8_t> a(plan.mask_shape);
    std::copy(m.begin(), m.end(), a.mutable_data());
    d["explicit_mask"] = a;
  }
  d["pse_shape"] = plan.has_pse ? py::object(py::cast(plan.pse_shape)) : py::object(py::none());
  d["pse_copy"] = plan.pse_copy;
  d["write_present"] = plan.write_present;
  const char* sources[] = {"inputs", "present", "scratch"};
  d["kv_source"] = sources[static_cast<int>(plan.kv_source)];
  d["compute_dtype"] = fastattn::elem_name(plan.compute_dtype);
  d["cast_inputs"] = plan.cast_inputs;
  d["query_shape"] = plan.query_shape;
  d["key_shape"] = plan.key_shape;
  d["value_shape"] = plan.value_shape;
  d["out_shape"] = plan.out_shape;
  d["zero_out_batches"] = plan.zero_out_batches;
  d["describe"] = ascend::describe(plan);
  return d;
}

py::array_t<uint8_t> ascend_compressed_mask() {
  const std::vector<uint8_t> m = fastattn::ascend::compressed_causal_mask();
  py::array_t<uint8_t> a({fastattn::ascend::kCompressedMaskSize, fastattn::ascend::kCompressedMaskSize});
  std::copy(m.begin(), m.end(), a.mutable_data());
  return a;
}

py::dict op_contract() {
  py::dict attributes;
  for (const auto& spec : core::kAttributeSpecs) {
    if (!spec.has_default) attributes[spec.name] = py::none();
    else if (spec.is_float) attributes[spec.name] = spec.default_value;
    else attributes[spec.name] = static_cast<int64_t>(spec.default_value);
  }
  py::dict d;
  d["domain"] = core::kOpDomain;
  d["op_type"] = core::kOpType;
  d["since_version"] = core::kOpSinceVersion;
  d["ep_name"] = core::kEpName;
  d["attributes"] = attributes;
  return d;
}

py::list backends() {
  py::list list;
  for (const fastattn::Backend* b : fastattn::backends()) list.append(py::make_tuple(b->name, b->describe()));
  return list;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "FastAttention kernels on NumPy arrays";
  m.def("attention", &attention, py::arg("query"), py::arg("key"), py::arg("value"), py::kw_only(),
        py::arg("num_heads") = py::none(), py::arg("kv_num_heads") = py::none(), py::arg("scale") = py::none(),
        py::arg("causal") = 0, py::arg("window_size") = -1, py::arg("softcap") = 0.0,
        py::arg("attn_bias") = py::none(), py::arg("key_padding_mask") = py::none(),
        py::arg("past_key") = py::none(), py::arg("past_value") = py::none(),
        py::arg("return_present") = false, py::arg("num_threads") = 0, py::arg("out") = py::none(),
        py::arg("present_key") = py::none(), py::arg("present_value") = py::none(), py::arg("dtype") = py::none(),
        "FastAttention forward on the CPU with the com.fastattention::FastAttention contract.\n"
        "out / present_key / present_value: optional preallocated (C-contiguous, writeable) outputs;\n"
        "giving a present returns (out, present_key, present_value) as return_present=True does.\n"
        "bfloat16: ml_dtypes.bfloat16 arrays, or uint16 arrays of the bits with dtype=\"bfloat16\".");
  m.def("attention_on_device", &attention_on_device, py::arg("attributes"), py::arg("inputs"),
        py::arg("outputs"), py::arg("device"), py::arg("ordinal"), py::arg("stream"),
        "The op on device tensors described as (pointer, dtype name, dims, element strides), launched\n"
        "on `stream` (an integer handle); fastattn_onnx.attention calls it for CUDA tensors.");
  m.def("infer_outputs", &infer_outputs, py::arg("attributes"), py::arg("inputs"),
        "The op contract's output types and shapes (used by the ONNX schema's shape inference)");
  m.def("ascend_plan", &ascend_plan, py::arg("attributes"), py::arg("inputs"), py::arg("return_present") = false,
        py::arg("key_visible") = py::none(), py::arg("kv_len") = py::none(), py::arg("allow_low_precision") = false,
        py::arg("low_precision_dtype") = "float16",
        "The Ascend aclnnFusedInferAttentionScore plan (kernels/ascend/fia_plan.h) for a node given by shapes:\n"
        "inputs as infer_outputs takes them, optionally with element strides; a dict with reason == '' and the\n"
        "plan's fields, or reason = why the operator cannot compute the node exactly.");
  m.def("ascend_compressed_mask", &ascend_compressed_mask,
        "The 2048 x 2048 uint8 triu(1) mask the operator's sparse modes 2-4 take (1 = hidden)");
  m.def("op_contract", &op_contract, "The op's domain, type, version, EP name and attribute defaults");
  m.def("backends", &backends, "The kernel backends compiled in: (name, what it selected on this machine)");
  m.def("cpu_isa", &fastattn::cpu::selected_isa, "The vector ISA the CPU kernel selected on this machine");
  m.def("cpu_compiled_isas", &fastattn::cpu::compiled_isas, "The vector ISAs compiled into the CPU kernel");
}
