"""How well a study's time predictions held, read from its log (output redirected, so progress is logged lines).

    budget curve --model mlp_pool ... > study.log 2>&1
    python benchmarks/eta.py study.log

Prints the estimate made before training against the time training took (the
study's closing line), and, for each progress display (the first pass with the
convergence check, then each later doubling), the ETA its lines printed nearest
25%, 50% and 75% of the work against the time that actually remained (the
display's last line, at 100%, says when it ended).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

PROGRESS = re.compile(r"training: (\d+)/(\d+) runs \((\d+)%\), elapsed ([\d:]+), eta ([\d:]+|unknown)")
CLOSING = re.compile(r"training took (.+); estimated (.+)$")
UNITS = {"s": 1, "min": 60, "h": 3600}


def seconds_of_clock(text: str) -> float:
    """``1:02:03`` or ``2:03`` in seconds."""
    total = 0
    for part in text.split(":"):
        total = 60 * total + int(part)
    return float(total)


def seconds_of_duration(text: str) -> float:
    """``12 min``, ``4.5 min``, ``30 s`` or ``1.2 h`` in seconds."""
    value, unit = text.split()
    return float(value) * UNITS[unit]


def displays(lines: list[str]) -> list[list[tuple[int, int, float, float]]]:
    """Each progress display's lines as (runs done, percent, elapsed, eta): a new display starts where the runs'
    total changes or the elapsed time goes back."""
    found: list[list[tuple[int, int, float, float]]] = []
    last = None
    for line in lines:
        match = PROGRESS.search(line)
        if not match:
            continue
        done, total, percent, elapsed, eta = match.groups()
        row = (int(done), int(percent), seconds_of_clock(elapsed), float("nan") if eta == "unknown" else seconds_of_clock(eta))
        if last is None or int(total) != last[0] or row[2] < last[1]:
            found.append([])
        found[-1].append(row)
        last = (int(total), row[2])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    args = parser.parse_args()
    lines = args.log.read_text().splitlines()
    for line in lines:
        if line.startswith("estimated training time"):
            print(line)
        closing = CLOSING.search(line)
        if closing:
            took, estimated = map(seconds_of_duration, closing.groups())
            print(f"training took {took:.0f} s, estimated {estimated:.0f} s: the estimate is "
                  f"{100 * (estimated - took) / took:+.0f}% of the time taken")
    print("\n| display | share of work | runs done | elapsed | ETA printed | time that remained | ETA error |")
    print("|---|---|---|---|---|---|---|")
    for number, rows in enumerate(displays(lines), start=1):
        end = rows[-1][2]
        if rows[-1][1] != 100:
            print(f"| {number} | (no closing line at 100%: the display did not finish) | | | | | |")
            continue
        for target in (25, 50, 75):
            done, percent, elapsed, eta = min(rows[:-1] or rows, key=lambda row: abs(row[1] - target))
            remained = end - elapsed
            error = 100 * (eta - remained) / remained if remained > 0 else float("nan")
            print(f"| {number} | {percent}% | {done} | {elapsed:.0f} s | {eta:.0f} s | {remained:.0f} s | {error:+.0f}% |")


if __name__ == "__main__":
    main()
