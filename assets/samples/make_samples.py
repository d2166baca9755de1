"""Draw the bundled sample pictures (synthetic, made here, free to use: CC0). Run: python assets/samples/make_samples.py

They are drawings, not photos, so no licence questions arise and the repository stays small (< 60 KB each).
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SIZE = 256


def cat_face() -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), (120, 170, 210))  # sky-blue background
    d = ImageDraw.Draw(img)
    fur, inner = (214, 140, 60), (240, 180, 170)
    d.polygon([(52, 110), (70, 22), (120, 80)], fill=fur)  # ears
    d.polygon([(204, 110), (186, 22), (136, 80)], fill=fur)
    d.polygon([(66, 98), (76, 46), (106, 82)], fill=inner)
    d.polygon([(190, 98), (180, 46), (150, 82)], fill=inner)
    d.ellipse([40, 60, 216, 230], fill=fur)  # head
    for x in (92, 164):  # eyes: green iris, slit pupil, highlight
        d.ellipse([x - 20, 112, x + 20, 148], fill=(120, 190, 60), outline=(40, 40, 40), width=2)
        d.ellipse([x - 5, 114, x + 5, 146], fill=(15, 15, 15))
        d.ellipse([x + 4, 120, x + 10, 126], fill=(255, 255, 255))
    d.polygon([(116, 166), (140, 166), (128, 180)], fill=(200, 90, 110))  # nose
    d.line([(128, 180), (128, 192)], fill=(60, 40, 30), width=3)  # mouth
    d.arc([104, 180, 128, 204], 0, 180, fill=(60, 40, 30), width=3)
    d.arc([128, 180, 152, 204], 0, 180, fill=(60, 40, 30), width=3)
    for dy in (-8, 2, 12):  # whiskers
        d.line([(100, 182), (30, 170 + dy * 1.5)], fill=(250, 250, 250), width=2)
        d.line([(156, 182), (226, 170 + dy * 1.5)], fill=(250, 250, 250), width=2)
    for x in (100, 128, 156):  # forehead stripes
        d.line([(x, 70), (x, 100)], fill=(160, 95, 35), width=6)
    return img.filter(ImageFilter.GaussianBlur(0.8))


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


def scene() -> Image.Image:
    y = np.linspace(0, 1, SIZE)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 230]) + y * np.array([200, 225, 250])
    img = Image.fromarray(np.broadcast_to(sky, (SIZE, SIZE, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([186, 20, 236, 70], fill=(255, 215, 70))  # sun
    d.rectangle([0, 180, SIZE, SIZE], fill=(70, 150, 60))  # grass
    d.rectangle([40, 120, 130, 190], fill=(200, 70, 60))  # house
    d.polygon([(30, 122), (85, 80), (140, 122)], fill=(110, 60, 40))  # roof
    d.rectangle([75, 150, 98, 190], fill=(90, 55, 30))  # door
    d.rectangle([50, 135, 68, 152], fill=(170, 210, 240))  # window
    d.rectangle([180, 130, 192, 195], fill=(100, 65, 35))  # tree trunk
    d.ellipse([158, 85, 214, 145], fill=(40, 120, 45))  # tree crown
    return img.filter(ImageFilter.GaussianBlur(0.6))


SAMPLES = {"cat_face": cat_face, "stripes": stripes, "checkerboard": checkerboard, "house_scene": scene}

if __name__ == "__main__":
    for name, draw in SAMPLES.items():
        draw().save(HERE / f"{name}.png", optimize=True)
        print(name, (HERE / f"{name}.png").stat().st_size, "bytes")
