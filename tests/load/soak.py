#!/usr/bin/env python3
"""Soak: the load tool's concurrent sends and its delivery measurement,
round after round against one running server, with the server's resident
memory, open files and latencies sampled after every round. Prints a row a
round and the trends (least-squares slopes per minute); fails if a round of
the load tool fails or the server's open files keep growing.

  tests/interop/with-server.sh tests/load/soak.py [--minutes N] [--round-seconds S] [--json OUT] URL

The server is whichever process listens on URL's port (its memory and file
descriptors are read from /proc). MYELIN_LOAD_BIN names the load tool
(default: $CARGO_TARGET_DIR/debug/myelin-load, which `cargo test
--workspace` builds; use the release build for figures).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time


def server_pid(url):
    port = re.search(r":(\d+)/?$", url)
    if not port:
        sys.exit(f"soak: no port in {url}")
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port.group(1)}"],
        capture_output=True, text=True, check=True,
    ).stdout
    pid = re.search(r"pid=(\d+)", out)
    if not pid:
        sys.exit(f"soak: no process listens on {url}")
    return int(pid.group(1))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(xs, ys):
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def run_round(load, url, index, seconds, out):
    """One round of the load tool; its figures by name."""
    done = subprocess.run(
        [load, "--homeserver", url, "--label", f"soak-{index}", "--json", out,
         "--scenarios", "send-spread-rooms,delivery",
         "--duration", str(seconds), "--delivery-count", "50"],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"round {index}: the load tool failed:\n{done.stderr[-4000:]}")
    with open(out) as results:
        scenarios = json.load(results)
    failed = [s["scenario"] for s in scenarios if not s["ok"]]
    if failed:
        raise RuntimeError(f"round {index}: {', '.join(failed)} failed")
    figures = {}
    for scenario in scenarios:
        figures.update(scenario["figures"])
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--round-seconds", type=int, default=45,
                        help="seconds of concurrent sends a round (delivery adds a few)")
    parser.add_argument("--fd-allowance", type=int, default=32,
                        help="open files the server may gain after the first round")
    parser.add_argument("--json", help="write the samples and trends here")
    parser.add_argument("url")
    args = parser.parse_args()

    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target")
    load = os.environ.get("MYELIN_LOAD_BIN") or os.path.join(target, "debug", "myelin-load")
    pid = server_pid(args.url)

    start = time.monotonic()
    samples = []
    print(f"{'min':>6} {'rss MiB':>8} {'fds':>5} {'msg/s':>8} {'send p99':>9} {'deliv p99':>10}")
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "round.json")
        index = 0
        while time.monotonic() - start < args.minutes * 60:
            figures = run_round(load, args.url, index, args.round_seconds, out)
            sample = {
                "minute": (time.monotonic() - start) / 60,
                "rss_mib": rss_mib(pid),
                "open_files": open_files(pid),
                "messages_per_s": figures["messages_per_s"],
                "send_p99_ms": figures["send_p99_ms"],
                "delivery_p99_ms": figures["delivery_p99_ms"],
            }
            samples.append(sample)
            print(f"{sample['minute']:6.1f} {sample['rss_mib']:8.1f} {sample['open_files']:5d} "
                  f"{sample['messages_per_s']:8.0f} {sample['send_p99_ms']:9.1f} "
                  f"{sample['delivery_p99_ms']:10.1f}", flush=True)
            index += 1

    minutes = [s["minute"] for s in samples]
    trends = {
        "rounds": len(samples),
        "rss_mib_per_min": slope(minutes, [s["rss_mib"] for s in samples]),
        "open_files_per_min": slope(minutes, [s["open_files"] for s in samples]),
        "delivery_p99_ms_per_min": slope(minutes, [s["delivery_p99_ms"] for s in samples]),
        "send_p99_ms_per_min": slope(minutes, [s["send_p99_ms"] for s in samples]),
        "open_files_gained": samples[-1]["open_files"] - samples[0]["open_files"],
    }
    print("trends: " + ", ".join(
        f"{name} {value:.2f}" if isinstance(value, float) else f"{name} {value}"
        for name, value in trends.items()))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"samples": samples, "trends": trends}, out, indent=1)
    if trends["open_files_gained"] > args.fd_allowance:
        sys.exit(f"soak: the server gained {trends['open_files_gained']} open files "
                 f"after the first round (allowed {args.fd_allowance}): a descriptor leak")


if __name__ == "__main__":
    main()
