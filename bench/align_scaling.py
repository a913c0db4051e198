"""Print time and peak memory of global alignment at 50, 200 and 500 frames (synthetic pairwise inputs).

Usage: python bench/align_scaling.py [N ...]
"""
from __future__ import annotations

import sys

from kd3d_core.alignment import alignment_benchmark


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [50, 200, 500]
    cols = ("frames", "pairs", "label_size", "align_s", "peak_mb", "max_t_cm", "max_r_deg", "aligned",
            "outlier_edges_rejected")
    print(" | ".join(cols))
    for n in sizes:
        row = alignment_benchmark(n)
        print(" | ".join(str(row[c]) for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
