"""A dependency-free SVG plot of the spread results: lateness p99 (log scale) against job count.

python -m benchlib.plot bench.json bench.svg      # bench.py --out also writes it beside the JSON
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

COLORS = {"raftsched": "#d62728", "aps-memory": "#1f77b4", "aps-sqlite": "#9467bd", "floor": "#2ca02c"}
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 70, 150, 40, 50


def series(results: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for n, systems in sorted(results.get("spread", {}).items(), key=lambda kv: int(kv[0])):
        for system, r in systems.items():
            p99 = (r.get("lateness_ms") or {}).get("p99")
            if p99 is not None:
                out.setdefault(system, []).append((int(n), max(0.1, float(p99))))
    return out


def svg(results: dict[str, Any]) -> str:
    data = series(results)
    xs = sorted({n for pts in data.values() for n, _ in pts}) or [1]
    ys = [v for pts in data.values() for _, v in pts] or [1.0]
    lo, hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    hi = max(hi, lo + 1)

    def px(n: int) -> float:
        if len(xs) == 1:
            return LEFT + (W - LEFT - RIGHT) / 2
        return LEFT + (W - LEFT - RIGHT) * xs.index(n) / (len(xs) - 1)

    def py(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - (math.log10(v) - lo) / (hi - lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
        'font-size="12">',
        f'<text x="{LEFT}" y="20" font-size="14">spread: lateness p99 (ms, log scale) by job count '
        "(1 run per job per second)</text>",
    ]
    for e in range(lo, hi + 1):
        y = py(10**e)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{10**e:g}</text>')
    parts += [f'<text x="{px(n):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{n:,}</text>' for n in xs]
    parts.append(f'<text x="{(W - RIGHT + LEFT) / 2}" y="{H - 12}" text-anchor="middle">jobs (runs/s)</text>')
    for i, (system, pts) in enumerate(sorted(data.items())):
        color = COLORS.get(system, "#444")
        path = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>' for n, v in pts]
        y = TOP + 20 * i
        parts.append(f'<rect x="{W - RIGHT + 15}" y="{y}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{W - RIGHT + 32}" y="{y + 11}">{system}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(svg(json.loads(Path(sys.argv[1]).read_text())))
