"""Collects the summary.json of every language-model run under a folder (scripts/lm_sweep.sh)
into results.csv, results.md and ppl_vs_bitops.png (test perplexity against bit-ops per token,
one line per width)."""
import csv
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def epoch_seconds(run_dir):
    """Median seconds of an epoch (training and validation) from metrics.jsonl."""
    times = []
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        for line in open(path):
            if line.strip():
                times.append(json.loads(line)["seconds"])
    return statistics.median(times) if times else float("nan")


def main(out):
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "*", "summary.json"))):
        s = json.load(open(path))
        if not s.get("completed") or "test_ppl" not in s:
            continue
        m, c = s["model"], s["cost"]
        name = "fp32" if m["weight_bits"] == 32 and m["hidden_bits"] == 32 else \
            f'{m["weight_bits"]}/{m["hidden_bits"]}'
        run_dir = os.path.dirname(path)
        rows.append({
            "bits (w/h)": name, "width": m["width"], "hidden": s["hidden"],
            "test_ppl": round(s["test_ppl"], 2), "valid_ppl": round(s["valid_ppl"], 2),
            "params": c["parameters"], "bit_ops_per_token": c["bit_ops_per_token"],
            "weight_storage_MiB": round(c["weight_storage_bytes"] / 2**20, 2),
            "epochs": s["epochs_completed"], "best_epoch": s["best_epoch"],
            "seconds_per_epoch": round(epoch_seconds(run_dir), 1),
            "tokens_per_second": round(s["train_tokens_per_second"]),
            "zero_fraction_init": round(s["zero_fraction_init"], 4),
        })
    if not rows:
        print(f"lm_report.py: no finished run under {out}", file=sys.stderr)
        return 1
    rows.sort(key=lambda r: (r["width"], -r["bit_ops_per_token"]))
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n")
        for r in rows:
            f.write("| " + " | ".join(str(v) for v in r.values()) + " |\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for width in sorted({r["width"] for r in rows}):
        pts = sorted((r["bit_ops_per_token"], r["test_ppl"], r["bits (w/h)"])
                     for r in rows if r["width"] == width)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{width:g}x")
        for x, y, label in pts:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bit-ops per token")
    ax.set_ylabel("test perplexity (Persuasion)")
    ax.set_title("WordLM on Jane Austen: perplexity vs. bit-ops")
    ax.legend(title="hidden width")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ppl_vs_bitops.png"), dpi=120)
    print(open(os.path.join(out, "results.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/lm"))
