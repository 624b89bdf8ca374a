"""Command line: python -m fastattn_onnx {doctor,bench,convert,demo} ... (a thin layer)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastattn_onnx")
    sub = parser.add_subparsers(dest="command", required=True)
    from .tools import bench, convert_cli, demo, doctor, genai_cli  # each module adds its own subcommand

    for mod in (doctor, bench, convert_cli, demo, genai_cli):
        mod.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
