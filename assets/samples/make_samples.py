"""Draw the bundled sample patterns (synthetic, made here, free to use: CC0). Run: python assets/samples/make_samples.py

The photos beside them (cat, coffee, rocket, astronaut) are not drawn here: see ATTRIBUTION.md for their sources.
"""
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = 256


def stripes() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin((x + 0.6 * y) * 2 * np.pi / 24)  # diagonal stripes, period 24 px
    zebra = np.stack([wave * 235 + 10, wave * 225 + 15, wave * 200 + 20], -1)
    return Image.fromarray(zebra.astype(np.uint8))


def checkerboard() -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    board = ((x // 32 + y // 32) % 2).astype(np.uint8)
    rgb = np.where(board[..., None] == 1, [235, 230, 215], [40, 45, 60]).astype(np.uint8)
    return Image.fromarray(rgb)


SAMPLES = {"stripes": stripes, "checkerboard": checkerboard}

if __name__ == "__main__":
    for name, draw in SAMPLES.items():
        draw().save(HERE / f"{name}.png", optimize=True)
        print(name, (HERE / f"{name}.png").stat().st_size, "bytes")
