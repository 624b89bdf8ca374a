"""Converted models in the clients people load ONNX models with: sentence-transformers (backend="onnx")
and optimum (ORTModelForFeatureExtraction), each exporting a tiny random BERT itself, with
FastAttentionEP named and with the client's default provider (which does not name it: there the
op runs on ONNX Runtime's CPU EP through the session hook of `import fastattn_onnx`).

Needs the `clients` extra (pip install 'fastattn-onnx[clients]'; it pins transformers < 4.58, so it
is not part of `test`); skipped without it. Nothing is downloaded: weights, vocabulary and
tokenizer are made here.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import fastattn_onnx
from fastattn_onnx.convert import convert

LAYERS = 2
HIDDEN = 32
WORDS = "the a cat dog sat on mat quick brown fox jumps over lazy hello world attention is all you need".split()
# Different lengths, so a batch has padding and the key padding mask matters.
SENTENCES = ["the cat sat on the mat", "hello world", "the quick brown fox jumps over the lazy dog , all you need"]
CONVERTED_NAME = "model_fastattention.onnx"
PROVIDERS = [fastattn_onnx.EP_NAME, None]  # None: whatever the client picks by default
PROVIDER_IDS = ["FastAttentionEP", "default_provider"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> str:
    """A 2-layer BERT with random weights and a BERT tokenizer over a small vocabulary, saved as
    a transformers model directory (config.json, weights, tokenizer files)."""
    transformers = pytest.importorskip("transformers")
    import torch

    directory = str(tmp_path_factory.mktemp("tiny-bert"))
    vocab_path = os.path.join(directory, "vocab.txt")
    with open(vocab_path, "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ","] + WORDS) + "\n")
    config = transformers.BertConfig(vocab_size=len(WORDS) + 6, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(directory)
    transformers.BertTokenizerFast(vocab_file=vocab_path).save_pretrained(directory)
    return directory


def _convert_beside(onnx_path: str) -> str:
    """Runs the converter on an exported model; returns the converted file (beside the original)."""
    output = os.path.join(os.path.dirname(onnx_path), CONVERTED_NAME)
    result = convert(onnx_path, output)
    fused_nodes = [n for n in onnx.load(output).graph.node if n.op_type == fastattn_onnx.OP_TYPE]
    assert result.fused == len(fused_nodes) == LAYERS, result.report.summary()
    return output


# --- sentence-transformers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sentence_transformers_case(request, tmp_path_factory):
    """(model directory with onnx/model.onnx exported by sentence-transformers and its converted
    copy, the unconverted ONNX model's embeddings of SENTENCES)."""
    st = pytest.importorskip("sentence_transformers",
                             reason="needs the clients extra: pip install 'sentence-transformers[onnx]'")
    pytest.importorskip("optimum.onnxruntime", reason="sentence-transformers' ONNX backend needs optimum-onnx")
    tiny_bert_dir = request.getfixturevalue("tiny_bert_dir")  # built only once the client is there
    directory = str(tmp_path_factory.mktemp("sentence-transformer"))
    st.SentenceTransformer(tiny_bert_dir, device="cpu").save(directory)  # BERT + mean pooling
    exported = st.SentenceTransformer(directory, backend="onnx", device="cpu")  # its own ONNX export
    exported.save(directory)  # writes onnx/model.onnx
    _convert_beside(os.path.join(directory, "onnx", "model.onnx"))
    return directory, exported.encode(SENTENCES)


@pytest.mark.parametrize("provider", PROVIDERS, ids=PROVIDER_IDS)
def test_sentence_transformers_onnx_backend_runs_the_converted_model(sentence_transformers_case, provider):
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    directory, expected = sentence_transformers_case
    model_kwargs = {"file_name": f"onnx/{CONVERTED_NAME}"}
    if provider:
        model_kwargs["provider"] = provider
    model = SentenceTransformer(directory, backend="onnx", device="cpu", model_kwargs=model_kwargs)
    session = model[0].auto_model.session
    assert os.path.basename(session._model_path) == CONVERTED_NAME
    assert session.get_providers()[0] == (provider or ort.get_available_providers()[0])
    np.testing.assert_allclose(model.encode(SENTENCES), expected, rtol=0, atol=ATOL)


# --- optimum --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def optimum_case(request, tmp_path_factory):
    """(directory with model.onnx exported by optimum and its converted copy, the tokenized
    SENTENCES, the unconverted model's last_hidden_state)."""
    optimum_ort = pytest.importorskip("optimum.onnxruntime",
                                      reason="needs the clients extra: pip install 'optimum-onnx[onnxruntime]'")
    tiny_bert_dir = request.getfixturevalue("tiny_bert_dir")
    from transformers import AutoTokenizer

    directory = str(tmp_path_factory.mktemp("optimum"))
    exported = optimum_ort.ORTModelForFeatureExtraction.from_pretrained(tiny_bert_dir, export=True)
    exported.save_pretrained(directory)  # model.onnx + config.json
    _convert_beside(os.path.join(directory, "model.onnx"))
    inputs = AutoTokenizer.from_pretrained(tiny_bert_dir)(SENTENCES, padding=True, return_tensors="pt")
    return directory, inputs, exported(**inputs).last_hidden_state.numpy()


@pytest.mark.parametrize("provider", PROVIDERS, ids=PROVIDER_IDS)
def test_optimum_feature_extraction_runs_the_converted_model(optimum_case, provider):
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    directory, inputs, expected = optimum_case
    kwargs = {"provider": provider} if provider else {}  # optimum's default: CPUExecutionProvider
    model = ORTModelForFeatureExtraction.from_pretrained(directory, file_name=CONVERTED_NAME, **kwargs)
    assert os.path.basename(model.session._model_path) == CONVERTED_NAME
    assert model.session.get_providers()[0] == (provider or "CPUExecutionProvider")
    np.testing.assert_allclose(model(**inputs).last_hidden_state.numpy(), expected, rtol=0, atol=ATOL)
