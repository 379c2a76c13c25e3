"""tests/reference/zen_dropout.py: LoRA dropout's masks as kernels.h and
model/decoder.c define them, written from that text: projection (layer l,
target t) of a run with dropout seed S draws its mask seed as the first
output of xoshiro256** seeded (through splitmix64) with S ^ ((7 l + t + 1) << 32);
element i of its flattened [N, in] input is kept when the top 24 bits of
splitmix64's finaliser of (seed + i * golden) reach p * 2^24 (in float32),
and a kept element is scaled by 1 / (1 - p)."""
import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9e3779b97f4a7c15


def _splitmix64(state):
    state = (state + GOLDEN) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return state, z ^ (z >> 31)


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


def _xoshiro_first(seed):
    s, state = [], seed & M64
    for _ in range(4):
        state, v = _splitmix64(state)
        s.append(v)
    return (_rotl((s[1] * 5) & M64, 7) * 9) & M64


def projection_seed(run_seed, layer, target):
    return _xoshiro_first(run_seed ^ ((layer * 7 + target + 1) << 32))


def mask(seed, p, n):
    """keep(i) / (1 - p) for i < n, as float64"""
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        z = z ^ (z >> np.uint64(31))
    threshold = np.uint64(int(np.float32(p) * np.float32(16777216.0)))
    keep = (z >> np.uint64(40)) >= threshold
    return keep.astype(np.float64) * float(np.float32(1.0) / (np.float32(1.0) - np.float32(p)))
