"""What the Python contenders share: the options `cdc-bench` runs them with (the stream file,
their folder, the batch size ours committed, how many events there are, their time budget)."""

import argparse


def contender_args():
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--budget", type=float, required=True)
    return p
