"""`python -m fastattn_onnx genai {enable,disable,status} MODEL_DIR`: name FastAttentionEP in (or
take it out of) an onnxruntime-genai model's genai_config.json. A thin layer over
fastattn_onnx.genai; programs must still call fastattn_onnx.genai.register() before og.Model."""
from __future__ import annotations

import argparse
import sys

from ..constants import EP_NAME

EXIT_OK, EXIT_BAD_MODEL_DIR = 0, 2


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "genai", help="name FastAttentionEP in an onnxruntime-genai model's genai_config.json",
        description=f"Edit model.decoder.session_options.provider_options of genai_config.json: enable puts "
                    f"{EP_NAME} first (atomic write; the file as first found kept as genai_config.json.orig), "
                    f"disable takes it out again, status shows the providers. In the program that runs the "
                    f"model, call fastattn_onnx.genai.register() before og.Model(...).")
    actions = parser.add_subparsers(dest="action", required=True)
    enable = actions.add_parser("enable", help=f"put {EP_NAME} first among the decoder's providers")
    enable.add_argument("model_dir", help="the folder genai's model builder wrote (with genai_config.json)")
    enable.add_argument("--no-keep-original", dest="keep_original", action="store_false",
                        help="do not keep genai_config.json.orig")
    enable.add_argument("--option", action="append", default=None, metavar="KEY=VALUE",
                        help=f"a {EP_NAME} provider option (repeatable; replaces the options the file has)")
    disable = actions.add_parser("disable", help=f"take {EP_NAME} out (the original file back where it matches)")
    disable.add_argument("model_dir")
    status = actions.add_parser("status", help="the decoder's providers, in order")
    status.add_argument("model_dir")
    parser.set_defaults(run=run)
    return parser


def _options(pairs: list[str] | None) -> dict | None:
    if pairs is None:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _providers_text(model_dir) -> str:
    from .. import genai

    listed = genai.providers(model_dir)
    return ", ".join(name + (f" {opts}" if opts else "") for name, opts in listed) or \
        "none listed (onnxruntime-genai runs it on the CPU EP)"


def run(args) -> int:
    from .. import genai

    try:
        path = genai.config_path(args.model_dir)
        if args.action == "enable":
            changed = genai.enable(args.model_dir, keep_original=args.keep_original,
                                   provider_options=_options(args.option))
            print(f"{path}: {'enabled' if changed else 'already enabled'}; decoder providers: "
                  f"{_providers_text(args.model_dir)}")
        elif args.action == "disable":
            changed = genai.disable(args.model_dir)
            print(f"{path}: {'disabled' if changed else 'not enabled'}; decoder providers: "
                  f"{_providers_text(args.model_dir)}")
        else:
            print(f"{path}: decoder providers: {_providers_text(args.model_dir)}")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_MODEL_DIR
    return EXIT_OK
