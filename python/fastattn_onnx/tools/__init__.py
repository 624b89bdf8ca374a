"""The command-line tools (bench, bench model, demo, doctor, convert), apart from the runtime API.

`python -m fastattn_onnx <command>` runs them. They import the runtime API; the runtime API
imports nothing from here.
"""
