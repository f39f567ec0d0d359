"""`dfkd data fetch NAME... | all` and `dfkd data list`: the benchmark datasets in `data_dir`.

`fetch` downloads each dataset from its public source, converts it to the CSV the configs read
and checks it against the expected table's SHA-256 before putting it in place
(dfkd_cli/data/fetch.py); a dataset already there is kept. `list` says what each dataset's
source is and whether data_dir holds it. data_dir is where the configs look: --data-dir, else
$DFKD_DATA_DIR, else ./data.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from dfkd_cli.data import fetch
from dfkd_cli.errors import UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dfkd data",
        description="The benchmark datasets: download them from their public sources into "
                    "data_dir (checked against the tables the paper's numbers were measured "
                    "on), or list what data_dir holds.")
    default_dir = os.environ.get("DFKD_DATA_DIR", "data")
    commands = parser.add_subparsers(dest="action", required=True, metavar="{fetch,list}")
    get = commands.add_parser("fetch", help="download datasets into data_dir")
    get.add_argument("names", nargs="+", metavar="NAME",
                     help=f"all ({', '.join(fetch.ALL)}) or any of: {', '.join(fetch.SOURCES)}")
    get.add_argument("--timeout", type=float, default=fetch.DEFAULT_TIMEOUT, metavar="S",
                     help="seconds to wait for an answer from a server (default: "
                          f"{fetch.DEFAULT_TIMEOUT:g})")
    show = commands.add_parser("list", help="each dataset's source, and whether data_dir has it")
    for sub in (get, show):
        sub.add_argument("--data-dir", default=default_dir, metavar="DIR",
                         help=f"where the datasets go (default: $DFKD_DATA_DIR or ./data; now "
                              f"{default_dir})")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    if args.action == "list":
        for name, source in fetch.SOURCES.items():
            state = fetch.present(source, data_dir) or "missing"
            print(f"{name:<12}{state:<9}{source.note}")
        return 0
    try:
        if not args.timeout > 0:
            raise UserError(f"--timeout {args.timeout:g}: expected a number of seconds > 0")
        for name in fetch.names(args.names):
            if fetch.SOURCES[name].kind != "none":
                print(f"{name}: fetching ({fetch.SOURCES[name].note})", file=sys.stderr)
            print(fetch.fetch(name, data_dir, args.timeout))
    except UserError as exc:
        print(f"dfkd data: error: {exc}", file=sys.stderr)
        return 2
    return 0
