"""Plots the memory soak's samples (seconds, messages fed, resident bytes) as a small PNG:
the connector's RSS against how much of the stream it has been given.

Usage: plot_rss.py SAMPLES.csv OUT.png [--title TEXT] [--limit-mb N]
"""

import argparse
import csv


def main():
    p = argparse.ArgumentParser()
    p.add_argument("samples")
    p.add_argument("out")
    p.add_argument("--title", default="connector RSS over the soak")
    p.add_argument("--limit-mb", type=float, default=400)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fed, rss = [], []
    with open(args.samples) as f:
        for row in csv.DictReader(f):
            fed.append(int(row["messages_fed"]) / 1e6)
            rss.append(int(row["rss_bytes"]) / 1e6)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.plot(fed, rss, linewidth=1, label="RSS")
    ax.axhline(args.limit_mb, color="red", linewidth=0.8, linestyle="--",
               label=f"target {args.limit_mb:.0f} MB")
    ax.set_xlabel("messages fed (millions)")
    ax.set_ylabel("resident set (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(args.title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
