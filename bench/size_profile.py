#!/usr/bin/env python3
"""What a release binary is made of: its loaded sections (`size -A`) and its symbols' bytes by crate
(`nm --print-size -C`), as JSON for bench/report.py's *Cold start and package size* section.

Usage: bench/size_profile.py receiver=path/to/bootstrap processor=path/to/bootstrap > size-profile.json

The binaries must keep their symbol table (`CARGO_PROFILE_RELEASE_STRIP=false`); what ships is the same
build stripped, so the sections' sizes are what the zip compresses. A symbol counts for the first crate
its demangled name names that is not core/alloc/std, so `core::ptr::drop_in_place<aws_sdk_sqs::..>` is
aws_sdk_sqs's: the code a generic costs is charged to the crate that instantiates it with its types.
Symbols without a crate path (ring's assembly and C, libc's startup code) count as "C and assembly".
"""

import collections
import json
import re
import subprocess
import sys

# A path's first segment: at the start, or after `<`, a space, `(`, `&`, `,`, `[` or `*`.
CRATE = re.compile(r"(?:^|[<\s(&,\[*])([a-z_][a-z0-9_]*)::")
SYMBOL = re.compile(r"^([0-9a-f]+) ([0-9a-f]+) (\w) (.*)$")
STD = ("core", "alloc", "std")
# Crate families shown as one row: the smithy runtime is one thing to a reader, each service is not.
FAMILIES = ("aws_smithy",)


def crate_of(symbol):
    crates = [c for c in CRATE.findall(symbol) if c not in STD] or CRATE.findall(symbol)
    if not crates:
        return "C and assembly (ring, libc start-up)"
    crate = crates[0]
    for family in FAMILIES:
        if crate.startswith(family):
            return family + "_*"
    return "Rust std/core/alloc" if crate in STD else crate


def loaded_sections(path):
    """Sections that are mapped at run time (a non-zero address): what the stripped binary keeps."""
    out = subprocess.run(["size", "-A", path], capture_output=True, text=True, check=True).stdout
    sections = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit() and int(parts[2]) != 0:
            sections[parts[0]] = int(parts[1])
    return sections


def crate_bytes(path):
    out = subprocess.run(["nm", "--print-size", "-C", path], capture_output=True, text=True, check=True).stdout
    sizes = collections.Counter()
    for line in out.splitlines():
        # "<address> <size> <type> <name>": code, read-only and writable data; not undefined symbols
        match = SYMBOL.match(line)
        if match and match.group(3).lower() in "tdrbv":
            sizes[crate_of(match.group(4))] += int(match.group(2), 16)
    return sizes


def main():
    out = {}
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        sections = loaded_sections(path)
        crates = crate_bytes(path)
        total = sum(crates.values())
        out[name] = {
            "sections": dict(sorted(sections.items(), key=lambda kv: -kv[1])),
            "symbol_bytes": total,
            "crates": [{"name": c, "bytes": n, "share": n / total} for c, n in crates.most_common(15)],
        }
    json.dump(out, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
