"""`python -m t2i.data inspect PATH`: what a captioned data set holds, and its bad files."""

from __future__ import annotations

import json
import logging
import sys

from t2i.cli import OneLineParser


def main(argv: list[str] | None = None) -> int:
    """The command line; a data set it cannot read is a one-line error and exit status 2."""
    parser = OneLineParser(prog="python -m t2i.data")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("inspect", help="count, image sizes, caption lengths, bad files")
    cmd.add_argument("path", help="an image folder, a .csv/.tsv/.parquet file, a datasets folder")
    cmd.add_argument("--caption-column", help="the captions' column of a table or datasets folder")
    cmd.add_argument("--image-column", help="the images' column of a table or datasets folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from t2i.data.sets import inspect  # torch and the readers: after the command line is read

    try:
        report = inspect(
            args.path, caption_column=args.caption_column, image_column=args.image_column
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
