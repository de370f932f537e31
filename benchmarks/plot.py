"""Draws benchmarks/postgres.png from benchmarks/postgres.json (written by `cargo xtask bench`):
throughput and peak memory against database size, per method."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    ("pg_dump to /dev/null (-Fc -Z0)", "pg_dump -Z0 to /dev/null (the limit)", "k", "--"),
    ("pg_dump -Fc -Z0 | zstd", "pg_dump -Z0 | zstd to /dev/null", "0.4", ":"),
    ("runner backup (defaults)", "runner backup to S3", "tab:blue", "-"),
    ("runner backup to a local directory", "runner backup to a local directory", "tab:cyan", "-"),
    ("script:", "pg_dump | gzip | aws s3 cp -", "tab:orange", "-"),
    ("Plan B", "Plan B (temp files)", "tab:red", "-"),
    ("runner restore", "runner restore from S3", "tab:green", "-"),
    ("pg_restore from", "pg_restore from a local file", "tab:olive", "--"),
]


def main(src, dst):
    data = json.load(open(src))
    runs = data["runs"]
    fig, (thr, mem) = plt.subplots(1, 2, figsize=(13, 7))
    for prefix, label, color, style in SERIES:
        points = sorted(
            (r["db_bytes"] / 2**20, r) for r in runs if r["method"].startswith(prefix)
        )
        if not points:
            continue
        sizes = [s for s, _ in points]
        thr.plot(sizes, [s / r["wall_s"] for s, r in points], style, color=color,
                 marker="o", label=label)
        if "pg_dump" in prefix or "pg_restore" in prefix:
            continue
        mem.plot(sizes, [r["peak_rss_kib"] / 1024 for _, r in points], style, color=color,
                 marker="o", label=label + " (largest process)")
    mem.axhline(64, color="tab:blue", linewidth=0.8, linestyle=":")
    mem.annotate("64 MiB target", (0.01, 64), xycoords=("axes fraction", "data"),
                 textcoords="offset points", xytext=(0, 3), fontsize=8, color="tab:blue")
    thr.set(title="Throughput (database MiB per second of wall time)",
            xlabel="database size (MiB)", ylabel="MiB/s")
    mem.set(title="Peak RSS", xlabel="database size (MiB)", ylabel="MiB")
    mem.set_ylim(bottom=0)
    thr.set_ylim(bottom=0)
    for ax in (thr, mem):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.suptitle("backup-runner (PostgreSQL): " + data["machine"], fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
