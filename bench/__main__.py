"""`python -m bench [--quick] [--only cost,cold_start,...]`: print the table, write results.json."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common, report

SECTIONS = report.SECTIONS
RESULTS = Path(__file__).resolve().parent / "results.json"


def _machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 8 minutes in all)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")

    common.prepare_environment()
    from bench.prices import PRICES, PRICES_AS_OF, REGION

    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": _machine(),
        "prices": {"as_of": PRICES_AS_OF, "region": REGION, **PRICES},
    }
    for name in wanted:
        module = __import__(f"bench.{name}", fromlist=["run"])
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            results[name] = module.run(quick=args.quick)
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others' figures
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["section_seconds"] = round(time.monotonic() - started, 1)
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    print(report.table(results))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
