#!/usr/bin/env python3
"""scripts/text_to_h5.py: turns a UTF-8 text into a zen-tokens-v1 HDF5 dataset
with byte-level ids (0..255, vocab_size 256): the stand-in tokenizer until
`zen data` brings Zen's own.

usage: text_to_h5.py INPUT.txt OUTPUT.h5"""
import sys

import h5py
import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8).astype(np.int32)
    if len(data) < 2:
        sys.exit(f"{sys.argv[1]}: too short to make a dataset")
    with h5py.File(sys.argv[2], "w") as f:
        f.create_dataset("tokens", data=data, chunks=True)
        f.attrs["vocab_size"] = 256
    print(f"wrote {sys.argv[2]}: {len(data)} byte-level tokens")


if __name__ == "__main__":
    main()
