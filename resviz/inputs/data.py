"""Datasets for the training race: a built-in one drawn from a seed, torchvision's, or a teacher's folder.

Every loader returns ``(train, test, class_names)`` with ``TensorDataset``s of normalised float images
``(N, C, H, W)`` in about [-1, 1] and int64 labels, so the training loop indexes batches without a DataLoader.
Nothing here downloads unless asked, and nothing here imports streamlit.
"""
from __future__ import annotations

import io
import logging
import math
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

log = logging.getLogger("resviz")

SHAPES = ("disc", "square", "triangle", "cross", "ring",
          "horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard", "dots")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_ZIP_FILES = 20_000  # an ImageFolder a teacher uploads; more is almost surely a mistake or a zip bomb
MAX_ZIP_BYTES = 300 * 2**20  # total uncompressed size allowed (300 MiB)
MAX_IMAGE_PIXELS = 40_000_000  # one image larger than this (e.g. 8000x5000) is skipped, not decoded
MAX_TORCHVISION_TRAIN = 10_000  # images kept per split: enough for a classroom race, ~120 MB as float
MAX_TORCHVISION_TEST = 2_000
# How hard the built-in images are: tuned so ResNet-20 learns them within a minute on a 2-core CPU.
SHAPE_SCALE = (0.45, 0.8)  # half-size of the class shape, as a fraction of half the image
DISTRACTOR_SCALE = (0.15, 0.3)  # a smaller shape of another class...
DISTRACTOR_ALPHA = 0.5  # ...drawn half-transparent
CONTRAST = (0.4, 0.7)  # brightness gap between shape and background
NOISE = 0.08  # std of the pixel noise, on a [0, 1] scale


class DatasetError(ValueError):
    """Data that cannot be used; the message says what to do."""


class DatasetUnavailable(DatasetError):
    """A torchvision dataset that is not on disk (and could not be downloaded)."""


# --- built-in shapes -------------------------------------------------------------------------------------


def _shape_mask(kind: int, u: torch.Tensor, v: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """Mask in [0, 1] of shape ``kind`` in local coordinates (u, v); the shape fills about |u|, |v| < 1."""
    r = torch.sqrt(u * u + v * v)
    box = (torch.maximum(u.abs(), v.abs()) < 0.9).float()  # the patch textures are drawn in
    f = freq.view(-1, 1, 1) * math.pi
    if kind == 0:
        return (r < 0.9).float()
    if kind == 1:
        return (torch.maximum(u.abs(), v.abs()) < 0.75).float()
    if kind == 2:
        return ((v > -0.6) & (v < 0.9 - math.sqrt(3) * u.abs())).float()
    if kind == 3:
        return (((u.abs() < 0.25) & (v.abs() < 0.9)) | ((v.abs() < 0.25) & (u.abs() < 0.9))).float()
    if kind == 4:
        return ((r > 0.5) & (r < 0.9)).float()
    if kind == 5:
        return box * (torch.sin(f * v) > 0).float()
    if kind == 6:
        return box * (torch.sin(f * u) > 0).float()
    if kind == 7:
        return box * (torch.sin(f * (u + v) / math.sqrt(2)) > 0).float()
    if kind == 8:
        return box * (torch.sin(f * u) * torch.sin(f * v) > 0).float()
    # dots: a grid of small discs
    cu = torch.remainder(u * freq.view(-1, 1, 1) / 2, 1.0) - 0.5
    cv = torch.remainder(v * freq.view(-1, 1, 1) / 2, 1.0) - 0.5
    return box * ((cu * cu + cv * cv) < 0.09).float()


def _draw(kinds: torch.Tensor, n: int, size: int, g: torch.Generator, scale: tuple[float, float]) -> torch.Tensor:
    """Masks (n, size, size) of shapes ``kinds`` at random centre, scale, small rotation and texture frequency."""
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")  # (size, size)
    s = torch.empty(n).uniform_(*scale, generator=g)
    margin = (1 - s * 0.8).clamp(min=0.05)
    cx = (torch.rand(n, generator=g) * 2 - 1) * margin
    cy = (torch.rand(n, generator=g) * 2 - 1) * margin
    theta = (torch.rand(n, generator=g) * 2 - 1) * 0.35  # +-20 degrees: stripes keep their orientation
    freq = torch.randint(2, 5, (n,), generator=g).float()
    dx = (xx - cx.view(-1, 1, 1)) / s.view(-1, 1, 1)
    dy = (yy - cy.view(-1, 1, 1)) / s.view(-1, 1, 1)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # (n, size, size) local coordinates
    masks = torch.zeros(n, size, size)
    for k in kinds.unique().tolist():
        sel = kinds == k
        masks[sel] = _shape_mask(k, u[sel], v[sel], freq[sel])
    return masks


def builtin_dataset(num_classes: int = 10, n_train: int = 4000, n_test: int = 1000, size: int = 32,
                    channels: int = 3, seed: int = 0) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """Images of shapes and textures, drawn from ``seed`` (no files, no download): ``(train, test, class_names)``.

    Each image: a random background colour with a smooth gradient, one shape of its class (random position,
    scale, small rotation, colour), a smaller fainter distractor of another class, and pixel noise.
    """
    if not 2 <= num_classes <= len(SHAPES):
        raise DatasetError(f"The built-in dataset has 2 to {len(SHAPES)} classes, not {num_classes}.")
    if channels not in (1, 3) or not 8 <= size <= 256 or n_train < 1 or n_test < 1:
        raise DatasetError("Built-in images need 1 or 3 channels, a size of 8 to 256 pixels and at least one image.")
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    labels = torch.arange(n) % num_classes  # balanced classes, then shuffled
    labels = labels[torch.randperm(n, generator=g)]
    main = _draw(labels, n, size, g, scale=SHAPE_SCALE)
    other = (labels + torch.randint(1, num_classes, (n,), generator=g)) % num_classes  # never the true class
    distractor = _draw(other, n, size, g, scale=DISTRACTOR_SCALE)
    bg = torch.rand(n, 3, 1, 1, generator=g)
    sign = torch.where(torch.rand(n, 1, 1, 1, generator=g) < 0.5, -1.0, 1.0)
    gap = CONTRAST[0] + (CONTRAST[1] - CONTRAST[0]) * torch.rand(n, 1, 1, 1, generator=g)
    shift = sign * gap + 0.15 * torch.randn(n, 3, 1, 1, generator=g)  # mostly brighter or darker, some hue
    fg = torch.where((bg + shift - 0.5).abs() <= 0.5, bg + shift, bg - shift)  # keep the contrast inside [0, 1]
    lin = torch.linspace(-1, 1, size)
    gx, gy = torch.randn(2, n, 1, 1, generator=g) * 0.1
    img = bg + (gx * lin.view(1, 1, -1) + gy * lin.view(1, -1, 1)).unsqueeze(1)  # (n, 3, size, size) background
    img = img + (fg - img) * main.unsqueeze(1)
    d_col = torch.rand(n, 3, 1, 1, generator=g)
    img = img + DISTRACTOR_ALPHA * (d_col - img) * distractor.unsqueeze(1)
    img = img + NOISE * torch.randn(n, 3, size, size, generator=g)
    img = img.clamp(0, 1)
    if channels == 1:
        img = img.mean(1, keepdim=True)
    x = (img - 0.5) / 0.5  # (n, C, size, size) in [-1, 1]
    train = TensorDataset(x[:n_train].contiguous(), labels[:n_train].clone())
    test = TensorDataset(x[n_train:].contiguous(), labels[n_train:].clone())
    return train, test, list(SHAPES[:num_classes])


def to_display(x: torch.Tensor) -> np.ndarray:
    """A normalised image (C, H, W) back to a displayable uint8 array (H, W, C) or (H, W)."""
    img = ((x.detach().cpu().float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    img = img.permute(1, 2, 0).numpy()
    return img[:, :, 0] if img.shape[2] == 1 else img


def adapt_dataset(ds: TensorDataset, size: int | None = None, channels: int | None = None) -> TensorDataset:
    """The same images resized to ``size`` and converted to ``channels`` (1 or 3) where they differ."""
    x, y = ds.tensors
    if channels is not None and x.shape[1] != channels:
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif channels == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise DatasetError(f"Cannot convert {x.shape[1]}-channel images to {channels} channels.")
    if size is not None and tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return TensorDataset(x.contiguous(), y)


def _to_tensor_dataset(images: np.ndarray | torch.Tensor, labels, limit: int) -> TensorDataset:
    """uint8 images (N, H, W) or (N, H, W, C) -> normalised float (N, C, H, W), the first ``limit`` kept."""
    x = torch.as_tensor(np.asarray(images[:limit]))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = (x.float() / 255 - 0.5) / 0.5
    y = torch.as_tensor(np.asarray(labels[:limit]), dtype=torch.int64)
    return TensorDataset(x.contiguous(), y)


# --- torchvision datasets --------------------------------------------------------------------------------


def _torchvision_classes() -> dict:
    from torchvision import datasets

    return {"CIFAR10": datasets.CIFAR10, "MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST}


TORCHVISION_NAMES = ("CIFAR10", "MNIST", "FashionMNIST")
DEFAULT_ROOT = os.environ.get("RESVIZ_DATA", str(Path.home() / ".cache" / "resviz" / "data"))


def load_torchvision_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False,
                             max_train: int = MAX_TORCHVISION_TRAIN, max_test: int = MAX_TORCHVISION_TEST,
                             classes: dict | None = None) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """CIFAR10, MNIST or FashionMNIST from ``root`` (default ``DEFAULT_ROOT``; downloaded there only if
    ``download``), as tensors.

    Raises DatasetUnavailable with what to do when the files are missing, corrupt or cannot be fetched.
    ``classes`` maps names to dataset classes (tests pass a subclass without md5 checks).
    """
    classes = classes or _torchvision_classes()
    root = DEFAULT_ROOT if root is None else root
    if name not in classes:
        raise DatasetUnavailable(f"Unknown dataset {name!r}; choose one of {', '.join(classes)}.")
    cls = classes[name]
    try:
        sets = [cls(root=str(root), train=train, download=False) for train in (True, False)]
    except Exception as first:  # noqa: BLE001 - missing, corrupt or partial files all read the same here
        if not download:
            raise DatasetUnavailable(
                f"{name} is not in {root} ({first}). Offline: copy torchvision's {name} files into that folder "
                f"(or set RESVIZ_DATA), or use the built-in dataset; online: tick 'download'.") from first
        try:
            sets = [cls(root=str(root), train=train, download=True) for train in (True, False)]
        except Exception as e:  # noqa: BLE001 - no network, proxy, disk full...
            raise DatasetUnavailable(
                f"Could not download {name} into {root} ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
                "This machine is probably offline: use the built-in dataset, or copy the files in by hand.") from e
    train, test = sets
    class_names = [str(c) for c in getattr(train, "classes", range(int(max(train.targets)) + 1))]
    return (_to_tensor_dataset(train.data, train.targets, max_train),
            _to_tensor_dataset(test.data, test.targets, max_test), class_names)


# --- a teacher's ImageFolder -----------------------------------------------------------------------------


def _safe_member(name: str) -> PurePosixPath:
    """The relative path of a zip member, or DatasetError if it could escape the extraction folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DatasetError(f"The zip contains an unsafe path {name!r} (absolute or with '..'); refusing it.")
    return p


def extract_zip_safely(data: bytes, dest: str | os.PathLike, max_files: int | None = None,
                       max_bytes: int | None = None) -> Path:
    """Extract an uploaded zip into ``dest``: no paths outside it, no links, capped file count and size."""
    dest = Path(dest)
    max_files = MAX_ZIP_FILES if max_files is None else max_files
    max_bytes = MAX_ZIP_BYTES if max_bytes is None else max_bytes
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"This is not a readable zip file ({e}).") from e
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for info in infos:
            _safe_member(info.filename)
        if len(infos) > max_files:
            raise DatasetError(f"The zip has {len(infos)} files; at most {max_files} are accepted.")
        if sum(i.file_size for i in infos) > max_bytes:
            raise DatasetError(f"The zip unpacks to more than {max_bytes // 2**20} MiB; refusing it.")
        total = 0
        for info in infos:
            if stat.S_ISLNK(info.external_attr >> 16):
                continue  # a symbolic link could point anywhere
            target = dest.joinpath(*_safe_member(info.filename).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)  # count what really comes out: sizes in the header can lie
                        if total > max_bytes:
                            raise DatasetError(f"The zip unpacks to more than {max_bytes // 2**20} MiB; "
                                               "refusing it.")
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
                raise DatasetError(f"The zip is damaged or uses an unsupported format ({e}).") from e
    return dest


def _find_root(folder: Path) -> Path:
    """The folder holding the class folders (a zip often wraps them in one top folder)."""
    while True:
        subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if len(subdirs) == 1 and not files:
            folder = subdirs[0]
        else:
            return folder


def _read_image(path: Path, size: int, channels: int) -> torch.Tensor | None:
    """One image file -> uint8 tensor (C, size, size), or None if it is not a readable, reasonable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                return None
            im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def _read_folder(root: Path, size: int, channels: int, report: list | None):
    root = _find_root(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))
    images, labels, names, skipped = [], [], [], 0
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        got = 0
        for f in files:
            img = _read_image(f, size, channels) if f.suffix.lower() in IMAGE_EXTENSIONS else None
            if img is None:
                skipped += 1
                continue
            images.append(img)
            labels.append(len(names))
            got += 1
        if got:
            names.append(d.name)
    if skipped and report is not None:
        report.append(f"Skipped {skipped} file(s) that are not readable images (or are too large).")
    if len(names) < 2:
        raise DatasetError("An image folder needs at least two class folders with images in them, "
                           "like cats/1.jpg, cats/2.jpg, dogs/1.jpg (ImageFolder layout).")
    return torch.stack(images), torch.tensor(labels), names


def teacher_folders() -> dict[str, Path]:
    """ImageFolder datasets the teacher offers on the server: the sub-folders of $RESVIZ_IMAGE_FOLDERS.

    Students choose one by name; they never type a path, so they cannot read other folders of the server.
    """
    root = os.environ.get("RESVIZ_IMAGE_FOLDERS")
    if not root or not Path(root).is_dir():
        return {}
    return {p.name: p for p in sorted(Path(root).iterdir()) if p.is_dir() and not p.name.startswith(".")}


def load_image_folder(path_or_zip_bytes: str | os.PathLike | bytes, size: int = 32, channels: int = 3,
                      test_fraction: float = 0.2, seed: int = 0,
                      report: list | None = None) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """A teacher's ImageFolder (one sub-folder per class), from a path or uploaded zip bytes, as tensors.

    Images are resized to ``size`` x ``size``; a seeded ``test_fraction`` of each class becomes the test
    split. Non-images are skipped (a note goes into ``report``); unsafe zips raise DatasetError.
    """
    if isinstance(path_or_zip_bytes, (bytes, bytearray)):
        tmp = tempfile.mkdtemp(prefix="resviz-folder-")
        try:
            extract_zip_safely(bytes(path_or_zip_bytes), tmp)
            x, y, names = _read_folder(Path(tmp), size, channels, report)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        root = Path(path_or_zip_bytes)
        if not root.is_dir():
            raise DatasetError(f"{root} is not a folder.")
        x, y, names = _read_folder(root, size, channels, report)
    g = torch.Generator().manual_seed(seed)
    test_idx = []
    for c in range(len(names)):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(len(idx) * test_fraction)) if len(idx) > 1 else 0
        test_idx.append(idx[:n_test])
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    test_mask[torch.cat(test_idx)] = True
    xf = (x.float() / 255 - 0.5) / 0.5
    train = TensorDataset(xf[~test_mask].contiguous(), y[~test_mask])
    test = TensorDataset(xf[test_mask].contiguous(), y[test_mask])
    if len(test) == 0:
        test = train  # too few images to hold any out; say so
        if report is not None:
            report.append("Too few images to keep a test split: test accuracy is measured on the training images.")
    return train, test, names
