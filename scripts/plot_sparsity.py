"""Zero fractions per layer from one or two wrpn_analyze --json files (e.g. an fp32 and a 2-bit
checkpoint), side by side: zeros of the weights as used, zeros of the activations entering each
conv/FC, and the share of MACs a zero-skipping engine would skip.

  .venv/bin/python scripts/plot_sparsity.py fp32.json w2a2.json --labels fp32,2-bit -o sparsity.png

Needs matplotlib (.venv/bin/python -m pip install -q matplotlib)."""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [
    ("effective_weight_zero_fraction", "weight zeros (%)"),
    ("activation_zero_fraction", "input activation zeros (%)"),
    ("macs_skipped", "MACs skipped (%)"),
]


def layer_values(layer):
    """The three panels' values (in percent) of one conv/linear layer."""
    return {
        "effective_weight_zero_fraction": 100.0 * layer["effective_weight_zero_fraction"],
        "activation_zero_fraction": 100.0 * layer["activation"]["zero_fraction"],
        "macs_skipped": 100.0 * layer["macs"]["skipped"],
    }


def load(path):
    with open(path) as f:
        j = json.load(f)
    layers = [l for l in j["layers"] if l["kind"] in ("conv", "linear")]
    if not layers:
        sys.exit(f"{path}: no conv or linear layers (is it a wrpn_analyze --json file?)")
    return j, {l["name"]: layer_values(l) for l in layers}, [l["name"] for l in layers]


def default_label(j, path):
    p = j.get("model", {}).get("precision")
    if not p:
        return path
    w, a = p["weight_bits"], p["act_bits"]
    name = "fp32" if w == 32 and a == 32 else f"w{w}a{a}"
    return f"{name} x{p['width']:g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", help="one or two wrpn_analyze --json files")
    ap.add_argument("--labels", help="comma-separated legend labels (default: from the files)")
    ap.add_argument("-o", "--out", default="sparsity.png", help="PNG to write")
    args = ap.parse_args()
    if len(args.json) > 2:
        ap.error("give one or two JSON files")
    runs = [load(p) for p in args.json]
    labels = args.labels.split(",") if args.labels else [
        default_label(j, p) for (j, _, _), p in zip(runs, args.json)]
    if len(labels) != len(runs):
        ap.error("--labels needs one label per JSON file")

    # Layers in the first file's order, then any only the second one has (models of other depth).
    names = list(runs[0][2])
    for _, _, order in runs[1:]:
        names += [n for n in order if n not in names]

    width = 0.8 / len(runs)
    xs = range(len(names))
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(max(8, 0.35 * len(names) + 2), 9),
                             sharex=True)
    for ax, (key, title) in zip(axes, PANELS):
        for i, ((j, values, _), label) in enumerate(zip(runs, labels)):
            ys = [values[n][key] if n in values else float("nan") for n in names]
            ax.bar([x + (i - (len(runs) - 1) / 2) * width for x in xs], ys, width, label=label)
        ax.set_ylabel(title)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    totals = []
    for (j, _, _), label in zip(runs, labels):
        t = j["totals"]
        totals.append(f"{label}: {100 * t['macs']['skipped']:.1f}% of MACs skippable, "
                      f"{100 * t['effective_weight_zero_fraction']:.1f}% zero weights")
    axes[0].set_title("; ".join(totals), fontsize=9)
    axes[-1].set_xticks(list(xs))
    axes[-1].set_xticklabels(names, rotation=75, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
