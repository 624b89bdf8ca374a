"""`python -m fastattn_onnx convert model.onnx [-o out.onnx] [--no-verify] [--report r.json]
[--tolerance X] [--allow-unchanged]`."""
from __future__ import annotations

import argparse
import sys

# Exit codes (documented in --help): scripts can tell a bad model from a bad path.
EXIT_OK, EXIT_BAD_MODEL, EXIT_VERIFY_FAILED, EXIT_INPUT_IO, EXIT_OUTPUT_IO = 0, 2, 3, 4, 5
EXIT_NOTHING_FUSED = 6

EPILOG = """\
exit codes:
  0  converted and written
  2  the input is not a model this converter can read or convert (also: bad arguments)
  3  the converted model does not match the original; nothing written
  4  the input cannot be read: no such file, a directory/FIFO/device, no permission, I/O error
  5  an output cannot be written: missing or unwritable directory, read-only file system,
     the path is a directory/device/FIFO or names the input (or its external data), disk
     full; nothing written (the model, its .data file and the report are moved into place
     together, the report first, only once everything succeeded)
  6  nothing fused: no attention subgraph found, or every one left alone (the reasons are
     printed); nothing written (--allow-unchanged writes the unchanged copy and exits 0)

verification tolerance: an output passes when max|converted - original| <= tolerance *
max|original|, compared in float64. The default follows the precision the fused attention
computes in (the lowest float type of the fused nodes, what they replaced and what reads their
outputs), not the outputs' type: 1e-4 float32, 1e-2 float16, 3e-2 bfloat16. So a float16 graph
with float32 inputs and outputs gets the float16 tolerance: its original is itself only float16-
accurate. --tolerance replaces it for every float output; integer and bool outputs must always
match exactly.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert", help="rewrite a model's attention into com.fastattention::FastAttention",
        description="Find every attention subgraph in an ONNX model, replace each with one "
                    "FastAttention node, and verify the result in ONNX Runtime.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="input .onnx file (never overwritten)")
    parser.add_argument("-o", "--output", help="output path (default: <model>.fa.onnx beside it); "
                        "only ever replaces a regular file, keeping its permissions")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="run original and converted on random inputs and compare (default on)")
    parser.add_argument("--report", metavar="JSON", help="write the conversion report here")
    parser.add_argument("--tolerance", type=_tolerance, metavar="X",
                        help="verification's allowed max|diff|, relative to each float output's "
                             "largest magnitude (default: by compute precision, see below)")
    parser.add_argument("--allow-unchanged", action="store_true",
                        help="write the model even when nothing was fused (exit 0, not 6)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(run=run)
    return parser


def _tolerance(text: str) -> float:
    from ..convert.verify import choose_tolerance

    try:
        return choose_tolerance(None, float(text)).relative
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0") from None


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run(args) -> int:
    from ..convert import ConvertError, VerifyError, convert
    from ..convert.loading import InputFileError, OutputFileError

    try:
        result = convert(args.model, output_path=args.output, verify=args.verify,
                         report_path=args.report, progress=not args.quiet,
                         tolerance=args.tolerance, allow_unchanged=args.allow_unchanged)
    except InputFileError as error:
        _error(str(error))
        return EXIT_INPUT_IO
    except OutputFileError as error:
        _error(str(error) if error.partial else f"{error}; nothing written")
        return EXIT_OUTPUT_IO
    except ConvertError as error:
        _error(str(error))
        return EXIT_BAD_MODEL
    except VerifyError as error:
        print(f"error: converted model does not match the original; nothing written.\n"
              f"  {error}", file=sys.stderr)
        for check in error.result.outputs:
            if not check.ok:
                print(f"  output {check.name}: max|diff| {check.max_abs_error:.3g} > "
                      f"{check.tolerance:.3g}", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    except OSError as error:  # anything the checks above did not name (e.g. scratch space)
        where = f"{error.filename}: " if error.filename else ""
        _error(f"{where}{error.strerror or error}; nothing written")
        return EXIT_OUTPUT_IO
    if not result.report.fused and not args.allow_unchanged:
        print(f"error: {result.report.nothing_fused()}\n"
              f"  nothing written (--allow-unchanged writes the unchanged model)", file=sys.stderr)
        return EXIT_NOTHING_FUSED
    print(result.report.summary())
    print(f"wrote {result.output_path}")
    return EXIT_OK


def main(argv=None) -> int:
    """Standalone entry (`python -m fastattn_onnx.tools.convert_cli model.onnx ...`)."""
    parser = argparse.ArgumentParser(prog="python -m fastattn_onnx")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["convert", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
