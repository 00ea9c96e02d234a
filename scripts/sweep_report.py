"""Collects the summary.json of every run under a sweep folder into results.csv, results.md and
accuracy_vs_bitops.png (accuracy against bit-ops, one line per width; cells with several seeds
are plotted at their mean, with the range as an error bar)."""
import csv
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run_init(run_dir):
    """The --init the run was trained with (options.json), "auto" when unknown."""
    options = os.path.join(run_dir, "options.json")
    if os.path.exists(options):
        return json.load(open(options)).get("init", "auto")
    return "auto"


def epoch_seconds(run_dir, summary):
    """Median wall time of an epoch (training and evaluation) from metrics.jsonl."""
    times = []
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        for line in open(metrics):
            line = line.strip()
            if line:
                m = json.loads(line)
                if "seconds" in m:
                    times.append(m["seconds"])
    if not times:
        return summary["wall_seconds"] / max(1, summary["epochs_completed"])
    times.sort()
    return times[len(times) // 2]


def main(out):
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "*", "summary.json"))):
        s = json.load(open(path))
        p = s["precision"]
        rows.append({
            "run": os.path.basename(os.path.dirname(path)),
            "model": s["model"],
            "weight_bits": p["weight_bits"],
            "act_bits": p["act_bits"],
            "width": p["width"],
            "precision": "fp32" if p["weight_bits"] == 32 and p["act_bits"] == 32
                         else f"{p['weight_bits']}/{p['act_bits']}",
            "best_top1": s["best_top1"],
            "final_top1": s["final_top1"],
            "parameters": s["parameters"],
            "bit_ops": s["bit_ops"],
            "weight_storage_bytes": s["weight_storage_bytes"],
            "seed": s.get("seed", 0),
            "init": run_init(os.path.dirname(path)),
            "dataset": s.get("dataset", ""),
            "epochs": s["epochs_completed"],
            "train_images": s.get("train_images", 0),
            "minutes": s["wall_seconds"] / 60,
            "seconds_per_epoch": epoch_seconds(os.path.dirname(path), s),
        })
    if not rows:
        sys.exit(f"no summary.json under {out}")
    order = {"fp32": 0}
    rows.sort(key=lambda r: (order.get(r["precision"], 1), -r["weight_bits"], -r["act_bits"],
                             r["width"], r["init"] != "auto", r["seed"]))
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    base = next((r for r in rows if r["precision"] == "fp32" and r["width"] == 1), None)
    lines = ["| precision (w/a) | width | init | seed | best top-1 | final top-1 | parameters "
             "| bit-ops (G) | bit-ops vs fp32 1x | weight storage (KiB) | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = f"{r['bit_ops'] / base['bit_ops']:.3f}x" if base else "n/a"
        lines.append(f"| {r['precision']} | {r['width']:g}x | {r['init']} | {r['seed']} "
                     f"| {100 * r['best_top1']:.2f}% "
                     f"| {100 * r['final_top1']:.2f}% | {r['parameters']:,} "
                     f"| {r['bit_ops'] / 1e9:.2f} | {rel} "
                     f"| {r['weight_storage_bytes'] / 1024:.0f} | {r['seconds_per_epoch']:.0f} |")
    open(os.path.join(out, "results.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for width in sorted({r["width"] for r in rows}):
        cells = {}
        for r in rows:
            if r["width"] == width and r["init"] == "auto":
                cells.setdefault((r["bit_ops"], r["precision"]), []).append(100 * r["best_top1"])
        pts = sorted((x, sum(v) / len(v), min(v), max(v), label)
                     for (x, label), v in cells.items())
        ys = [p[1] for p in pts]
        ax.errorbar([p[0] for p in pts], ys, yerr=[[p[1] - p[2] for p in pts],
                                                   [p[3] - p[1] for p in pts]],
                    marker="o", capsize=3, label=f"{width:g}x wide")
        for x, y, _, _, label in pts:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for r in rows:
        if r["init"] != "auto":
            ax.plot([r["bit_ops"]], [100 * r["best_top1"]], marker="s", linestyle="none",
                    color="gray", label=f"{r['width']:g}x {r['precision']}, --init {r['init']}")
    ax.set_xscale("log")
    ax.set_xlabel("bit-ops per image (MACs x weight bits x activation bits, log scale)")
    ax.set_ylabel("best test top-1 (%)")
    where = f" on {rows[0]['dataset']}" if rows[0]["dataset"] else ""
    ax.set_title(f"{rows[0]['model']}{where}: accuracy against bit-ops")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy_vs_bitops.png"), dpi=120)
    print(f"wrote {out}/results.csv, results.md, accuracy_vs_bitops.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/sweep")
