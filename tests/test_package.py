"""The Python package's registration side: library path, EP name, version check, doctor, and the
op's constants (fastattn_onnx.constants) against what the compiled library and onnx report."""
from __future__ import annotations

import os

import onnx
import onnxruntime as ort
import pytest

import fastattn_onnx
from fastattn_onnx import _kernels, _ort
from fastattn_onnx.constants import ATTRIBUTE_DEFAULTS, EP_NAME, OP_DOMAIN, OP_SINCE_VERSION, OP_TYPE
from fastattn_onnx.tools import doctor


def test_library_and_ep_name():
    assert os.path.isfile(fastattn_onnx.get_library_path())
    assert fastattn_onnx.get_ep_name() == "FastAttentionEP"
    assert "FastAttentionEP" in [d.ep_name for d in ort.get_ep_devices()]


def test_old_onnxruntime_gives_a_clear_import_error(monkeypatch):
    monkeypatch.setattr(ort, "__version__", "1.26.2")
    with pytest.raises(ImportError, match=r"onnxruntime >= 1\.27.*1\.26\.2"):
        _ort.check_onnxruntime()


def test_doctor_reports_the_ep_device_and_kernels():
    text = "\n".join(doctor.report())
    assert "FastAttentionEP: registered" in text
    assert "device: CPU" in text
    assert "CPU vector ISA:" in text and "CUDA not built" in text


def test_constants_match_the_library_contract():
    """constants.py spells what the C++ contract (core/op_contract.h) says, as the library reports it."""
    contract = _kernels.op_contract()
    assert (contract["domain"], contract["op_type"], contract["since_version"], contract["ep_name"]) == \
           (OP_DOMAIN, OP_TYPE, OP_SINCE_VERSION, EP_NAME)
    assert contract["attributes"] == ATTRIBUTE_DEFAULTS


def test_the_registered_ep_is_named_ep_name():
    library = fastattn_onnx.get_library_path()
    ours = [d for d in ort.get_ep_devices()
            if os.path.isfile(d.ep_metadata.get("library_path", ""))
            and os.path.samefile(d.ep_metadata["library_path"], library)]
    assert ours, "no EP device comes from our library"
    assert {d.ep_name for d in ours} == {EP_NAME}


def test_the_onnx_schema_has_the_constants():
    schema = onnx.defs.get_schema(OP_TYPE, OP_SINCE_VERSION, OP_DOMAIN)
    assert (schema.domain, schema.name, schema.since_version) == (OP_DOMAIN, OP_TYPE, OP_SINCE_VERSION)
    defaults = {name: onnx.helper.get_attribute_value(a.default_value) if a.default_value.type else None
                for name, a in schema.attributes.items()}
    assert defaults == ATTRIBUTE_DEFAULTS
