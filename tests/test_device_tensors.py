"""fastattn_onnx.attention on device tensors, as far as a machine without a GPU can check it: the
description of `__cuda_array_interface__` objects reaches the dispatch, which names what is
missing; mixed host/device arguments are refused by name. (tests/gpu/ runs the real thing.)"""
from __future__ import annotations

import numpy as np
import pytest

import fastattn_onnx
from fastattn_onnx import _kernels


class ForeignDeviceBuffer:
    """A buffer another library placed on a CUDA device, seen only through the interface (its
    memory is never touched here: no CUDA kernel is compiled into this build)."""

    def __init__(self, shape, typestr="<f2", address=1 << 20):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr,
                                         "data": (address, False), "version": 3, "strides": None}


needs_cpu_only_build = pytest.mark.skipif(
    any(name == "cuda" for name, _ in _kernels.backends()),
    reason="the CUDA kernel is compiled in: tests/gpu/ checks device tensors on a GPU")


@needs_cpu_only_build
def test_device_tensors_reach_the_dispatch_which_names_the_missing_kernel():
    q, k, v, out = (ForeignDeviceBuffer((1, 2, 4, 8)) for _ in range(4))
    with pytest.raises(ValueError, match="no kernel for the cuda device in this build"):
        fastattn_onnx.attention(q, k, v, num_heads=2, out=out)


def test_contract_rules_apply_before_any_launch():
    q, k, v, out = (ForeignDeviceBuffer((1, 2, 4, 8)) for _ in range(4))
    with pytest.raises(ValueError, match="kv_num_heads"):
        fastattn_onnx.attention(q, k, v, num_heads=2, kv_num_heads=3, out=out)
    wrong = ForeignDeviceBuffer((1, 2, 4, 7))
    with pytest.raises(ValueError, match="wrong shape"):
        fastattn_onnx.attention(q, k, v, num_heads=2, out=wrong)


def test_mixed_host_and_device_arguments_are_refused_by_name():
    q, v, out = (ForeignDeviceBuffer((1, 2, 4, 8)) for _ in range(3))
    k = np.zeros((1, 2, 4, 8), np.float16)
    with pytest.raises(TypeError, match="key is on the host"):
        fastattn_onnx.attention(q, k, v, num_heads=2, out=out)
    with pytest.raises(TypeError, match="out= is required"):
        fastattn_onnx.attention(q, q, v, num_heads=2)
    with pytest.raises(ValueError, match="dtype= applies to host arrays"):
        fastattn_onnx.attention(q, q, v, num_heads=2, out=out, dtype="bfloat16")
    host = np.ones((1, 2, 4, 8), np.float32)
    with pytest.raises(ValueError, match="stream= applies to CUDA tensors"):
        fastattn_onnx.attention(host, host, host, num_heads=2, stream=0)
