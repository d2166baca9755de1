"""Image loading and validation (any upload -> RGB PIL image), preprocessing shown step by step, samples.

The one image decoder of resviz: uploads, image-folder zips and teacher folders all go through ``load_image``.
Every image is untrusted: size, format, pixel count, aspect ratio and a JPEG's number of scans are checked from
the bytes before a pixel is decoded, so a decompression bomb, a 1 x 20000 sliver or a 400-scan progressive JPEG
becomes an ``ImageError`` with a plain-words message, and the work of decoding is bounded by the pixels times
``limits.JPEG_SCANS``. Whatever Pillow raises on a damaged file (``struct.error`` from a corrupt EXIF tag,
``ZeroDivisionError``, ``OSError`` ...) is an ``ImageError`` too.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from resviz.inputs import limits

FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # what the uploader accepts; others are refused before decoding
FOLDER_FORMATS = FORMATS + ("GIF", "TIFF", "PPM")  # image folders may also hold these (PPM reads .pgm too)
UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "bmp")  # file extensions for st.file_uploader
MAX_BYTES = limits.mb(limits.IMAGE_MB)  # the uploader's own cap (a phone photo is 2-8 MB)
MAX_PIXELS = limits.MAX_PIXELS  # the one pixel cap, for uploads and image folders alike
MAX_ASPECT = limits.MAX_ASPECT  # long side / short side; scaling a sliver by its short side is unbounded work
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "samples"
SAMPLE_SUFFIXES = (".jpg", ".png")  # photos (JPEG keeps them a few tens of KB) and drawn patterns

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAINING_MEAN = (0.5, 0.5, 0.5)  # what resviz.data uses for the training page: (x - 0.5) / 0.5 in [-1, 1]
TRAINING_STD = (0.5, 0.5, 0.5)


class ImageError(ValueError):
    """An upload that is not a usable image; the message says why in plain words, ``reason`` in a few."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message  # what a list of skipped files says: "corrupt EXIF", "1 x 20000 pixels"


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def check_shape(w: int, h: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ImageError unless a w x h image has pixels, at most ``max_pixels`` of them, and a sane aspect ratio."""
    if w < 1 or h < 1:
        raise ImageError("This image has no pixels.", "no pixels")
    if w * h > max_pixels:  # checked from the header, before any pixel is decoded
        raise ImageError(f"This image is {w} x {h} = {w * h / 1e6:.0f} megapixels; the limit is "
                         f"{max_pixels / 1e6:.0f}. Use a smaller picture.", f"{w} x {h} pixels, too many")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"This image is {w} x {h} pixels: one side is {max(w, h) / min(w, h):,.0f} times the "
                         f"other. Pictures up to {MAX_ASPECT}:1 are accepted (a phone panorama is about 4:1); "
                         "crop it first.", f"{w} x {h} pixels, a sliver")


def count_scans(data: bytes) -> int:
    """At least the number of scans in a JPEG's bytes, counted without decoding: its FF DA (SOS) markers.

    Every scan starts with those two bytes, and inside compressed data an FF byte is always followed by 00 or a
    restart marker, so no scan is missed; metadata may add a few (an EXIF thumbnail's own scans, binary maker
    notes), which ``limits.JPEG_SCANS`` leaves room for.
    """
    return data.count(b"\xff\xda")


def scan_work(data: bytes) -> int:
    """Pixels x scans of a JPEG (0 for any other file), from its header: what decoding it costs even at a draft
    scale, since every scan passes over every block (about 0.55 CPU-s per 1,000 megapixel-scans, measured)."""
    if not data.startswith(b"\xff\xd8"):
        return 0
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data), formats=("JPEG",)) as img:
            warnings.simplefilter("ignore")  # a bomb or a damaged file: load_image refuses it in plain words
            return img.width * img.height * count_scans(data)
    except Exception:  # noqa: BLE001 - the same: load_image says why
        return 0


def check_scans(img: Image.Image, data: bytes) -> None:
    """Raise ImageError if a JPEG (or a JPEG-compressed TIFF) has more scans than ``limits.JPEG_SCANS``.

    A progressive JPEG's decoder goes over every pixel once per scan, so a 0.24 MB file of 400 nearly empty
    scans costs seconds of CPU, and a 10 MB one most of an hour.
    """
    jpeg = img.format in ("JPEG", "MPO") or img.info.get("compression") in ("jpeg", "tiff_jpeg")
    if jpeg and (scans := count_scans(data)) > limits.JPEG_SCANS:
        raise ImageError(f"This JPEG is stored in {scans:,} scans (passes over the picture, each decoded in full); "
                         f"at most {limits.JPEG_SCANS} are accepted (a progressive photo has about 10). Save it "
                         "again as an ordinary JPEG.", f"{scans:,} JPEG scans")


def _open_checked(data: bytes, max_bytes: int, max_pixels: int, formats: tuple[str, ...]) -> Image.Image:
    if not data:
        raise ImageError("The file is empty (0 bytes). Choose a photo or a sample image.", "empty")
    if len(data) > max_bytes:
        raise ImageError(f"The file is {_mb(len(data))}; the limit is {_mb(max_bytes)}. Use a smaller photo.",
                         f"{_mb(len(data))}, over {_mb(max_bytes)}")
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ImageError("This file is not an image we can read. Use a JPEG, PNG, WebP or BMP picture.",
                         "not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("This image claims an enormous size (a 'decompression bomb'); refused.",
                         "decompression bomb") from None
    except Exception as e:  # noqa: BLE001 - whatever Pillow's parsers raise on a hostile header is a damaged file
        raise _damaged(e) from None
    check_shape(*img.size, max_pixels)
    check_scans(img, data)
    return img


def _damaged(e: Exception) -> Exception:
    """Any exception of Pillow's on a damaged file (OSError, struct.error, ZeroDivisionError...) in plain words;
    a MemoryError stays itself (the server's memory, not the file: ``ui.friendly_errors`` says so)."""
    if isinstance(e, MemoryError):
        return e
    detail = (str(e).splitlines() or [type(e).__name__])[0][:120]
    return ImageError(f"The image file is damaged or cut short ({detail}). Try saving or exporting it again.",
                      "damaged")


def load_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               formats: tuple[str, ...] = FORMATS, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image, or raise ImageError with a plain-words reason.

    ``draft=(w, h)``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale, still at least w x h (image folders
    resize to the model's input anyway; a 12 MP photo then costs 0.2 MP of work).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning is an error here
        img = _open_checked(data, max_bytes, max_pixels, formats)
        try:
            if draft is not None:
                img.draft("RGB", draft)  # JPEG only; other formats ignore it
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError("This image is too large to decode safely (a 'decompression bomb'); refused.",
                             "decompression bomb") from None
        except Exception as e:  # noqa: BLE001 - a damaged file, whatever Pillow's decoder raises
            raise _damaged(e) from None
        try:
            img = ImageOps.exif_transpose(img)  # phone photos: rotate as the camera meant
        except Exception:  # noqa: BLE001 - struct.error, ValueError...: one damaged tag makes the EXIF unreadable
            raise ImageError("This picture's EXIF data (the camera's notes, which say which way up it is) is "
                             "damaged. Save or export the picture again.", "corrupt EXIF") from None
        try:
            return to_rgb(img)
        except Exception as e:  # noqa: BLE001 - a mode Pillow decoded but cannot convert is a damaged file too
            raise _damaged(e) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16-bit scaled (not clipped), transparency over white, CMYK converted."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.array(img, dtype=np.float32)  # float32, worked in place: a 40 MP image stays at 160 MB
        top = 65535.0 if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) <= 65535) else None
        if top is None:  # 32-bit or float data: stretch what is there to 0..255
            lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
            a -= lo
            top = max(hi - lo, 1e-12)
        np.clip(a, 0, top, out=a)
        a *= 255 / top
        return Image.fromarray(np.round(a, out=a).astype(np.uint8)).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode == "LA" or mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


@dataclass(frozen=True)
class Preprocess:
    """How a picture becomes the network's input; shown on the page, not hidden."""

    resize: int  # shorter side after resizing
    crop: int  # side of the center crop = the network's input size
    mean: tuple[float, float, float]  # per-channel mean subtracted after scaling to [0, 1]
    std: tuple[float, float, float]  # per-channel standard deviation divided by


def preprocess_for(input_size: int, imagenet: bool = True, resize: int | None = None) -> Preprocess:
    """torchvision's recipe (shorter side to size*256/224, center crop, ImageNet statistics), or with
    ``imagenet=False`` the training page's (shorter side to the input size, crop, (x - 0.5) / 0.5)."""
    if resize is None:
        resize = round(input_size * 256 / 224) if imagenet else input_size
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (TRAINING_MEAN, TRAINING_STD)
    return Preprocess(resize=resize, crop=input_size, mean=mean, std=std)


def preprocess_steps(img: Image.Image, pre: Preprocess) -> dict:
    """Each step as data: original (thumbnail), resized, cropped (uint8 HxWx3) and normalized (float 3xHxW).

    The resized image is at most ``MAX_ASPECT`` times ``pre.resize`` long: slivers are refused (ImageError).
    """
    w, h = img.size
    check_shape(w, h, max_pixels=w * h)  # load_image checked this already; a caller's own PIL image may not be
    scale = pre.resize / min(w, h)
    resized = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR,
                         reducing_gap=3.0)
    rw, rh = resized.size
    left, top = (rw - pre.crop) // 2, (rh - pre.crop) // 2
    cropped = resized.crop((left, top, left + pre.crop, top + pre.crop))  # pads with black if too small
    x = np.asarray(cropped, dtype=np.float32).transpose(2, 0, 1) / 255.0  # (3, H, W) in [0, 1]
    normalized = (x - np.array(pre.mean, np.float32)[:, None, None]) / np.array(pre.std, np.float32)[:, None, None]
    thumb = img.copy()
    thumb.thumbnail((512, 512))  # the page shows the original small; a 12 MP photo need not be cached
    return {"original": np.asarray(thumb), "original_size": img.size, "resized": np.asarray(resized), "cropped": np.asarray(cropped),
            "normalized": normalized, "pre": pre}


def to_tensor(steps: dict, device: str | torch.device = "cpu", channels: int = 3) -> torch.Tensor:
    """The normalized image as a (1, channels, H, W) batch on ``device`` (1 channel: the mean of R, G, B)."""
    x = torch.from_numpy(steps["normalized"]).unsqueeze(0)
    if channels != 3:
        x = x.mean(1, keepdim=True).expand(1, channels, *x.shape[-2:]).contiguous()
    return x.to(device)


def sample_names() -> list[str]:
    """Bundled sample pictures: photos (public domain or CC0, ``assets/samples/ATTRIBUTION.md``) and drawn patterns."""
    return sorted(p.stem for p in SAMPLES_DIR.iterdir() if p.suffix in SAMPLE_SUFFIXES)


def sample_bytes(name: str) -> bytes:
    for suffix in SAMPLE_SUFFIXES:
        path = SAMPLES_DIR / f"{Path(name).name}{suffix}"  # Path(name).name: no way out of the folder
        if path.is_file():
            return path.read_bytes()
    raise ImageError(f"There is no sample called {name!r}.")
