"""Checks the hand-written CANN declarations (kernels/ascend/cann_api.h) against the ACL headers of
the torch-npu wheel, which are never committed: the wheel is fetched with `pip download` (or given),
its torch_npu/include unpacked into a cache, and one translation unit compiled that includes
acl/acl_rt.h and static_asserts, function by function, that our pointer types have the ABI of the
headers' declarations (enums compared as 32-bit integers, as they are passed). The aclnn meta API
(aclCreateTensor ...) is compared with the function-pointer typedefs of the wheel's op-plugin
header; the operator itself (no header in the wheel) is left to the document and the test double.

    python cmake/check_acl_prototypes.py --source-dir . [--include-dir DIR | --wheel FILE]
                                         [--cache DIR] [--cxx g++]

Exit status 0 and one line per group checked; non-zero with the compiler's message otherwise.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "torch-npu==2.13.0"
META_HEADER = "third_party/op-plugin/op_plugin/utils/op_api_common_base.h"

CHECKS = r"""
#include <cstddef>
#include <type_traits>

namespace abi {
// The ABI of a type: enums as the 32-bit integer they are passed as, our hand-declared version
// struct as ACL's (its layout is asserted below), pointers and functions element by element.
template <class T, class = void> struct Of { using type = T; };
template <class T> struct Of<T, std::enable_if_t<std::is_enum_v<T>>> {
  using type = std::make_signed_t<std::underlying_type_t<T>>;
};
template <> struct Of<fastattn::cann::aclCANNPackageVersion> { using type = ::aclCANNPackageVersion; };
template <class T> struct Of<T*> { using type = typename Of<T>::type*; };
template <class T> struct Of<const T> { using type = const typename Of<T>::type; };
template <class R, class... A> struct Of<R (*)(A...)> {
  using type = typename Of<R>::type (*)(typename Of<A>::type...);
};
template <class A, class B> constexpr bool same = std::is_same_v<typename Of<A>::type, typename Of<B>::type>;
}  // namespace abi

#define CHECK_AclHeader(name) \
  static_assert(abi::same<decltype(&::name), fastattn::cann::name##_fn>, #name " differs from acl/acl_rt.h");
#define CHECK_WheelMeta(name) \
  static_assert(abi::same<::_##name, fastattn::cann::name##_fn>, #name " differs from the wheel's op-plugin typedef");
#define CHECK_Document(name)
#define CHECK_ONE(lib, name, ret, params, required, source) CHECK_##source(name)
FASTATTN_CANN_FUNCTIONS(CHECK_ONE)

namespace c = fastattn::cann;
static_assert(c::kAclFloat == ACL_FLOAT && c::kAclFloat16 == ACL_FLOAT16 && c::kAclInt8 == ACL_INT8 &&
              c::kAclInt32 == ACL_INT32 && c::kAclUint8 == ACL_UINT8 && c::kAclInt64 == ACL_INT64 &&
              c::kAclBool == ACL_BOOL && c::kAclBf16 == ACL_BF16, "aclDataType values");
static_assert(c::kAclFormatNd == ACL_FORMAT_ND, "aclFormat ACL_FORMAT_ND");
static_assert(c::kAclMemMallocHugeFirst == ACL_MEM_MALLOC_HUGE_FIRST, "ACL_MEM_MALLOC_HUGE_FIRST");
static_assert(c::kAclMemcpyHostToDevice == ACL_MEMCPY_HOST_TO_DEVICE &&
              c::kAclMemcpyDeviceToHost == ACL_MEMCPY_DEVICE_TO_HOST &&
              c::kAclMemcpyDeviceToDevice == ACL_MEMCPY_DEVICE_TO_DEVICE, "aclrtMemcpyKind values");
static_assert(c::kAclPkgNameCann == ACL_PKG_NAME_CANN, "ACL_PKG_NAME_CANN");
static_assert(c::kAclSuccess == ACL_SUCCESS && c::kAclErrorRepeatInitialize == ACL_ERROR_REPEAT_INITIALIZE,
              "error codes");
static_assert(std::is_same_v<c::aclError, ::aclError> && std::is_same_v<c::aclrtStream, ::aclrtStream> &&
              std::is_same_v<c::aclrtEvent, ::aclrtEvent>, "handle types");
#define SAME_FIELD(f) offsetof(c::aclCANNPackageVersion, f) == offsetof(::aclCANNPackageVersion, f)
static_assert(sizeof(c::aclCANNPackageVersion) == sizeof(::aclCANNPackageVersion) && SAME_FIELD(version) &&
              SAME_FIELD(majorVersion) && SAME_FIELD(minorVersion) && SAME_FIELD(releaseVersion) &&
              SAME_FIELD(patchVersion) && SAME_FIELD(reserved), "aclCANNPackageVersion layout");
"""


def include_dir_from(args) -> str:
    if args.include_dir:
        return args.include_dir
    cache = args.cache or os.path.join(tempfile.gettempdir(), "fastattn-acl-headers")
    target = os.path.join(cache, "torch_npu", "include")
    if os.path.isfile(os.path.join(target, "acl", "acl_rt.h")):
        return target
    wheel = args.wheel
    if not wheel:
        os.makedirs(cache, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache, WHEEL], check=True)
        found = sorted(glob.glob(os.path.join(cache, "torch_npu-*.whl")))
        if not found:
            sys.exit(f"pip download {WHEEL} left no wheel in {cache}")
        wheel = found[-1]
    with zipfile.ZipFile(wheel) as z:
        z.extractall(cache, [n for n in z.namelist() if n.startswith("torch_npu/include/")])
    return target


def meta_typedefs(include_dir: str) -> str:
    """The opaque handles and _aclCreate*/_aclDestroy* pointer typedefs of the op-plugin header
    (the header itself includes ATen and cannot be compiled here)."""
    text = open(os.path.join(include_dir, META_HEADER)).read()
    handles = re.findall(r"typedef struct \w+ \w+;", text)
    pointers = re.findall(r"typedef [^;{}]*?\(\*_acl(?:Create|Destroy)\w*\)\([^;]*?\);", text, re.S)
    if not pointers:
        sys.exit(f"no _aclCreate*/_aclDestroy* typedefs found in {META_HEADER}")
    return "\n".join(handles + pointers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-dir", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--include-dir", help="torch_npu/include of an unpacked torch-npu wheel")
    ap.add_argument("--wheel", help="a torch_npu wheel file (else pip download " + WHEEL + ")")
    ap.add_argument("--cache", help="where the wheel and its headers are kept")
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    args = ap.parse_args()
    inc = include_dir_from(args)
    unit = "\n".join(["#include <acl/acl_rt.h>", meta_typedefs(inc), '#include "cann_api.h"', CHECKS])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "check_acl_prototypes.cc")
        with open(path, "w") as f:
            f.write(unit)
        cmd = [args.cxx, "-std=c++17", "-fsyntax-only", "-Wno-deprecated-declarations", "-I", inc,
               "-I", os.path.join(inc, "acl"), "-I", os.path.join(args.source_dir, "kernels", "ascend"), path]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        print("CANN declarations: MISMATCH with the ACL headers of " + inc, file=sys.stderr)
        return 1
    print(f"CANN declarations match the ACL headers in {inc}: runtime functions against acl/acl_rt.h, "
          f"aclCreateTensor/IntArray/TensorList and destroys against {META_HEADER}, enum values and "
          "aclCANNPackageVersion's layout; aclnnFusedInferAttentionScore* and aclnnInplaceCopy* follow the "
          "documented prototypes (the test double asserts them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
