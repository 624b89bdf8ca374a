"""`python -m fastattn_onnx convert model.onnx [-o out.onnx] [--no-verify] [--report r.json]`."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert", help="rewrite a model's attention into com.fastattention::FastAttention",
        description="Find every attention subgraph in an ONNX model, replace each with one "
                    "FastAttention node, and verify the result in ONNX Runtime.")
    parser.add_argument("model", help="input .onnx file (never overwritten)")
    parser.add_argument("-o", "--output", help="output path (default: <model>.fa.onnx beside it)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="run original and converted on random inputs and compare (default on)")
    parser.add_argument("--report", metavar="JSON", help="write the conversion report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    from ..convert import ConvertError, VerifyError, convert

    try:
        result = convert(args.model, output_path=args.output, verify=args.verify,
                         report_path=args.report, progress=not args.quiet)
    except ConvertError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except VerifyError as error:
        print(f"error: converted model does not match the original; nothing written.\n"
              f"  {error}", file=sys.stderr)
        for check in error.result.outputs:
            if not check.ok:
                print(f"  output {check.name}: max|diff| {check.max_abs_error:.3g} > "
                      f"{check.tolerance:.3g}", file=sys.stderr)
        return 3
    print(result.report.summary())
    print(f"wrote {result.output_path}")
    return 0


def main(argv=None) -> int:
    """Standalone entry (`python -m fastattn_onnx.tools.convert_cli model.onnx ...`)."""
    parser = argparse.ArgumentParser(prog="python -m fastattn_onnx")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["convert", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
