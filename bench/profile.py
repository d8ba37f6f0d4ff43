#!/usr/bin/env python3
"""Where a process's CPU went: reads `perf script -F pid,tid,ip,sym,dso` output (a flat, system-wide
`perf record` of the load stage) and writes, per binary name, the share of samples by component and
the top symbols, as JSON for bench/report.py.

Usage: perf script -i perf.data -F pid,tid,ip,sym,dso | bench/profile.py receiver bench-noop-http > profile.json
       bench/profile.py --sizes receiver=path/to/bootstrap processor=path/to/bootstrap > size-profile.json

A process is the named binary's when any of its samples is in that binary (its main thread's name
would not do: tokio's worker threads are all `tokio-runtime-w`); every sample of such a process counts,
in the kernel and libc too.

Components are named from the demangled symbol's crates (the first crate named in it that is not
core/alloc/std, so `<hyper::... as tower::Service>::call` counts as hyper) and, for code outside the
binary, from the shared object: the kernel (system calls, the network stack, page faults), libc
(malloc, memcpy). A stripped binary has no symbols: its samples count as "binary (no symbols)".

With `--sizes`, what release binaries are made of instead: their loaded sections (`size -A`) and
their symbols' bytes by crate (`nm --print-size -C`), by the same crate rule, so a generic's code is
charged to the crate that instantiates it with its types (`core::ptr::drop_in_place<aws_sdk_sqs::..>`
is aws_sdk_sqs's). The binaries must keep their symbol table (`CARGO_PROFILE_RELEASE_STRIP=false`);
what ships is the same build stripped, so the sections are what the zip compresses. Symbols without a
crate path (ring's assembly and C, libc's start-up code) count as "C and assembly".
"""

import collections
import json
import re
import subprocess
import sys

# Crate prefixes grouped into what they do for a webhook.
COMPONENTS = [
    ("signature (HMAC-SHA256, hex, constant-time compare)", ("sha2", "hmac", "hex", "subtle", "digest", "stripe_pipeline::signature")),
    ("AWS request signing (SigV4)", ("aws_sigv4",)),
    ("AWS SDK request pipeline (smithy orchestrator, serialisation, retries)", ("aws_smithy", "aws_sdk", "aws_runtime", "aws_types", "aws_credential", "aws_config")),
    ("HTTP client and server (hyper, h2, http)", ("hyper", "h2", "http", "httparse", "tower")),
    ("JSON (serde_json, the Runtime API event both ways)", ("serde_json", "serde", "aws_lambda_events", "lambda_http", "query_map")),
    ("Lambda runtime client", ("lambda_runtime",)),
    ("async runtime (tokio, futures)", ("tokio", "futures", "mio", "parking_lot")),
    ("logging and metrics (tracing, JSON lines, EMF)", ("tracing", "stripe_pipeline::telemetry", "sharded_slab")),
    ("the receiver's own logic (intake, dedup, queue)", ("receiver", "stripe_pipeline")),
    ("TLS and crypto other than the signature", ("rustls", "aws_lc", "ring", "openssl_probe", "webpki")),
    ("Rust std/core/alloc (formatting, collections)", ("core", "alloc", "std", "hashbrown")),
]

# A path's first segment: at the start, or after `<`, a space, `(`, `&`, `,`, `[` or `*`.
CRATE = re.compile(r"(?:^|[<\s(&,\[*])([a-z_][a-z0-9_]*)::")

STD = ("core", "alloc", "std")


def crates_of(sym):
    """The crates a demangled symbol names, std's left out unless it names nothing else."""
    return [c for c in CRATE.findall(sym) if c not in STD] or CRATE.findall(sym)


def component(dso, sym):
    if "kernel" in dso or dso.startswith("[") and dso != "[unknown]":
        return "kernel (system calls, network stack, scheduling)"
    if "libc" in dso or "ld-linux" in dso or "libpthread" in dso or "libm" in dso:
        return "libc (malloc/free, memcpy)"
    if not sym or sym == "[unknown]":
        return "binary (no symbols)"
    crates = crates_of(sym)
    for name, prefixes in COMPONENTS:
        for crate in crates[:1]:
            path = sym[sym.find(crate):]
            if any(crate == p or crate.startswith(p + "_") or path.startswith(p) for p in prefixes):
                return name
    if sym.startswith(("malloc", "free", "realloc", "calloc", "mem", "__mem")):
        return "libc (malloc/free, memcpy)"
    return "other"


# "<pid>/<tid>  <ip> <sym>+0x.. (<dso>)" or "... [unknown] (<dso>)"
LINE = re.compile(r"^\s*(\d+)/\d+\s+[0-9a-f]+\s+(.*?)\s+\(([^()]*)\)\s*$")


def main():
    wanted = sys.argv[1:]
    by_pid = collections.defaultdict(list)
    owner = {}
    for line in sys.stdin:
        match = LINE.match(line)
        if not match:
            continue
        pid, sym, dso = match.groups()
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym.strip())
        by_pid[pid].append((sym, dso))
        name = dso.rsplit("/", 1)[-1]
        if name in wanted:
            owner.setdefault(pid, name)
    samples = {c: collections.Counter() for c in wanted}
    symbols = {c: collections.Counter() for c in wanted}
    for pid, name in owner.items():
        for sym, dso in by_pid[pid]:
            samples[name][component(dso, sym)] += 1
            symbols[name][sym if sym and sym != "[unknown]" else f"[{dso}]"] += 1
    out = {}
    for comm in wanted:
        total = sum(samples[comm].values())
        out[comm] = {
            "samples": total,
            "components": [
                {"name": name, "share": n / total} for name, n in samples[comm].most_common()
            ] if total else [],
            "top_symbols": [
                {"symbol": sym[:140], "share": n / total} for sym, n in symbols[comm].most_common(15)
            ] if total else [],
        }
    json.dump(out, sys.stdout, indent=2)


# `nm` lines: "<address> <size> <type> <name>" (undefined symbols have no address or size).
SYMBOL = re.compile(r"^([0-9a-f]+) ([0-9a-f]+) (\w) (.*)$")
# Crate families shown as one row: the smithy runtime is one thing to a reader, each service is not.
FAMILIES = ("aws_smithy",)


def size_crate(sym):
    crates = crates_of(sym)
    if not crates:
        return "C and assembly (ring, libc start-up)"
    crate = crates[0]
    for family in FAMILIES:
        if crate.startswith(family):
            return family + "_*"
    return "Rust std/core/alloc" if crate in STD else crate


def loaded_sections(path):
    """Sections mapped at run time (a non-zero address): what the stripped binary keeps."""
    out = subprocess.run(["size", "-A", path], capture_output=True, text=True, check=True).stdout
    sections = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit() and int(parts[2]) != 0:
            sections[parts[0]] = int(parts[1])
    return sections


def crate_bytes(path):
    """Bytes of code, read-only and writable data by crate."""
    out = subprocess.run(["nm", "--print-size", "-C", path], capture_output=True, text=True, check=True).stdout
    sizes = collections.Counter()
    for line in out.splitlines():
        match = SYMBOL.match(line)
        if match and match.group(3).lower() in "tdrbv":
            sizes[size_crate(match.group(4))] += int(match.group(2), 16)
    return sizes


def sizes(binaries):
    out = {}
    for arg in binaries:
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
    if sys.argv[1:2] == ["--sizes"]:
        sizes(sys.argv[2:])
    else:
        main()
