"""Check that a `sam build` output ships bytecode the Lambda runtime loads as it is.

`python3.11 layers/shared/sam/check_bytecode.py BUILD_DIR [BUILD_DIR ...]`: every `.py` file
under each folder (a function's code, a layer's `python/`) must have its
`__pycache__/<name>.cpython-311.pyc`, of the running interpreter's magic number, hash-based
and unchecked (the runtime never compares it with its source, whose modification time the
deployment zip does not keep), made from that very source, and readable by every user (Lambda
runs the code as a user that owns none of the files). Exit status 1 names what is missing.
"""

from __future__ import annotations

import importlib.util
import stat
import sys
from pathlib import Path

# PEP 552: bit 0 set = hash-based bytecode, bit 1 set = check the source. Unchecked = 0b01.
UNCHECKED_HASH = 0b01


def problems(root: Path) -> tuple[int, list[str]]:
    """(how many sources were checked, what is wrong with them) under `root`."""
    checked, found = 0, []
    for source in sorted(root.rglob("*.py")):
        if "__pycache__" in source.parts:
            continue
        checked += 1
        compiled = Path(importlib.util.cache_from_source(str(source)))
        name = source.relative_to(root)
        if not compiled.is_file():
            found.append(f"{name}: no {compiled.relative_to(root)}")
            continue
        header = compiled.read_bytes()[:16]
        if header[:4] != importlib.util.MAGIC_NUMBER:
            found.append(f"{name}: bytecode of another Python version")
        elif int.from_bytes(header[4:8], "little") != UNCHECKED_HASH:
            found.append(f"{name}: not unchecked-hash bytecode (flags {header[4:8].hex()})")
        elif header[8:16] != importlib.util.source_hash(source.read_bytes()):
            found.append(f"{name}: bytecode of another source")
        elif not compiled.stat().st_mode & stat.S_IROTH:
            found.append(f"{name}: bytecode not readable by every user")
    return checked, found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for folder in map(Path, argv):
        checked, found = problems(folder)
        if checked == 0 or found:
            failed = True
            print(f"{folder}: {len(found)} of {checked} sources without usable bytecode", file=sys.stderr)
            for line in found[:20]:
                print(f"  {line}", file=sys.stderr)
        else:
            print(f"{folder}: bytecode for all {checked} sources")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
