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
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import TensorDataset

from resviz.inputs import budget, images, limits, text

log = logging.getLogger("resviz")

SHAPES = ("disc", "square", "triangle", "cross", "ring",
          "horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard", "dots")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_ZIP_FILES = limits.FOLDER_FILES  # an ImageFolder a teacher uploads; more is almost surely a mistake or a zip bomb
MAX_ZIP_BYTES = limits.mb(limits.FOLDER_MB)  # total uncompressed size allowed (300 MiB)
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


@dataclass(frozen=True)
class Skipped:
    """A file of an image folder left out of the dataset, and why."""

    name: str  # its path in the folder or zip, as the student wrote it: escape it where it is shown (inputs.text)
    reason: str  # a few plain words: "corrupt EXIF", "not an image file name", "1 x 20000 pixels, a sliver"


class FolderData(tuple):
    """``(train, test, class_names)``, unpacked like every loader's, and ``skipped``: the files left out and why,
    so a page can say "skipped 2 files: a.jpg (corrupt EXIF), b.png (damaged)" (``skipped_note``)."""

    skipped: tuple[Skipped, ...]

    def __new__(cls, train: TensorDataset, test: TensorDataset, class_names: list[str], skipped=()):
        self = super().__new__(cls, (train, test, class_names))
        self.skipped = tuple(skipped)
        return self

    def __getnewargs__(self):
        return (*self, self.skipped)


def skipped_note(skipped: tuple[Skipped, ...] | list[Skipped], show=text.md, most: int = 5) -> str:
    """'Skipped 2 files that are not usable images: a.jpg (corrupt EXIF), b.png (damaged).', the first ``most``
    named; ``show`` makes each name safe where the note lands (default: Streamlit markdown)."""
    if not skipped:
        return ""
    named = ", ".join(f"{show(s.name)} ({s.reason})" for s in skipped[:most])
    more = f" and {len(skipped) - most:,} more" if len(skipped) > most else ""
    files = ("1 file that is not a usable image" if len(skipped) == 1
             else f"{len(skipped):,} files that are not usable images")
    return f"Skipped {files}: {named}{more}."


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
# A zip is read in memory, entry by entry: nothing is written to disk, so no entry can clash with the file
# system or land outside a folder, and a refused upload leaves no temp files behind. Every image, from a zip
# or a teacher's folder, goes through the one decoder (resviz.inputs.images) with its one set of caps.


def _shown(name: str) -> str:
    """An entry's name as a message shows it: quoted and at most 60 characters, never a server path."""
    return repr(name if len(name) <= 60 else f"{name[:30]}…{name[-29:]}")


def _member_path(name: str) -> PurePosixPath:
    """The relative path of a zip entry, or DatasetError if it could escape a folder or no folder could hold it.

    Its length and depth are checked first, from the text: every later step (the parts, the clash check, the
    class layout) grows with them.
    """
    if name.replace("\\", "/").strip("/").count("/") >= limits.PATH_DEPTH:
        raise DatasetError(f"The zip entry {_shown(name)} is nested more than {limits.PATH_DEPTH} folders deep; an "
                           "image folder needs two levels (cats/1.jpg). Zip a flatter folder.")
    if len(name.encode("utf-8", "surrogatepass")) > limits.PATH_BYTES:
        raise DatasetError(f"The zip entry {_shown(name)} has a path longer than {limits.PATH_BYTES:,} bytes; "
                           "zip a folder with shorter names.")
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]) or "\0" in name:
        raise DatasetError(f"The zip contains an unsafe path {_shown(name)} (absolute or with '..'); refusing it.")
    if any(len(part.encode()) > 255 for part in p.parts):
        raise DatasetError(f"The zip entry {_shown(name)} has a name longer than 255 bytes, which no folder can "
                           "hold; rename it and zip the folder again.")
    return p


def _check_entries(data: bytes) -> None:
    """Refuse, before zipfile parses the directory, a zip with more than ``limits.ZIP_ENTRIES`` entries: each
    directory record starts with PK\\1\\2, so counting them (at C speed) never undercounts what zipfile reads."""
    if (n := data.count(b"PK\x01\x02")) > limits.ZIP_ENTRIES:
        raise DatasetError(f"The zip has {n:,} entries; at most {limits.ZIP_ENTRIES:,} are accepted "
                           f"({limits.FOLDER_FILES:,} images and their folders).")


def _zip_listing(zf: zipfile.ZipFile, max_files: int, max_bytes: int) -> list[tuple[PurePosixPath, zipfile.ZipInfo]]:
    """The zip's files with their paths, sorted, checked from its directory before anything is unpacked."""
    files, folders = [], set()
    for info in zf.infolist():  # at most limits.ZIP_ENTRIES (_check_entries)
        if info.is_dir():
            folders.add(_member_path(info.filename).parts)
        elif not stat.S_ISLNK(info.external_attr >> 16):  # a symbolic link could point anywhere
            files.append((_member_path(info.filename), info))
    for path, info in files:
        if info.flag_bits & 0x1:
            raise DatasetError(f"The zip entry {_shown(info.filename)} is encrypted (password-protected); "
                               "zip the folder again without a password.")
    if len(files) > max_files:
        raise DatasetError(f"The zip has {len(files)} files; at most {max_files} are accepted.")
    if sum(info.file_size for _, info in files) > max_bytes:
        raise DatasetError(f"The zip unpacks to more than {max_bytes // 2**20} MiB; refusing it.")
    files.sort(key=lambda f: f[0].parts)
    _check_clashes(files, folders)
    return files


def _check_clashes(files: list[tuple[PurePosixPath, zipfile.ZipInfo]], folders: set[tuple[str, ...]]) -> None:
    """Refuse two files of one path, or a file and a folder of one name, from the sorted paths alone: a path that
    is some other path's folder sorts right before one that starts with it (no set of every path's parents)."""
    for (path, info), (after, later) in zip(files, files[1:]):
        if after.parts == path.parts:
            raise DatasetError(f"The zip holds {_shown(later.filename)} twice; zip the folder again.")
    for (path, info), (after, _) in zip(files, [*files[1:], (PurePosixPath(), None)]):
        if path.parts in folders or after.parts[:len(path.parts)] == path.parts:
            raise DatasetError(f"The zip holds a file and a folder both called {_shown(info.filename)}; rename "
                               "one of them and zip the folder again.")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One entry's bytes. zipfile stops at the size the directory declares and checks the CRC, so an entry whose
    declared size lies (smaller than what it unpacks to) is a damaged entry, never a bigger read."""
    try:
        with zf.open(info) as src:
            return src.read()
    except NotImplementedError:
        raise DatasetError(f"The zip entry {_shown(info.filename)} uses a compression method that cannot be read "
                           "here; zip the folder again with ordinary (deflate) compression.") from None
    except RuntimeError:  # zipfile's word for an encrypted entry the directory did not flag
        raise DatasetError(f"The zip entry {_shown(info.filename)} is encrypted (password-protected); "
                           "zip the folder again without a password.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
        raise DatasetError(f"The zip entry {_shown(info.filename)} is damaged (it does not unpack to what the "
                           "zip's directory says); zip the folder again.") from None


def _classes(paths: list[PurePosixPath]) -> dict[str, list[int]]:
    """The ImageFolder layout of relative file paths: class name -> indices of its files, both sorted.

    A single wrapping folder (or a chain of them) is looked through: zips often hold one top folder.
    """
    prefix: tuple[str, ...] = ()
    while True:
        below = [p.parts[len(prefix):] for p in paths if p.parts[:len(prefix)] == prefix]
        dirs = sorted({q[0] for q in below if len(q) > 1 and not q[0].startswith((".", "__MACOSX"))})
        images_here = any(len(q) == 1 and q[0].lower().endswith(IMAGE_EXTENSIONS) for q in below)
        if len(dirs) != 1 or images_here:
            break
        prefix += (dirs[0],)
    classes: dict[str, list[int]] = {d: [] for d in dirs}
    for i in sorted(range(len(paths)), key=paths.__getitem__):
        q = paths[i].parts[len(prefix):] if paths[i].parts[:len(prefix)] == prefix else ()
        if len(q) > 1 and q[0] in classes and not q[-1].startswith("."):
            classes[q[0]].append(i)
    return classes


def _decode(data: bytes, size: int, channels: int) -> tuple[torch.Tensor, int]:
    """Image bytes -> (uint8 tensor (C, size, size), pixels decoded) through the one image decoder, or ImageError."""
    img = images.load_image(data, formats=images.FOLDER_FORMATS, draft=(size, size))
    decoded = img.width * img.height  # a JPEG decodes at 1/8 of its size where that is still >= size x size
    img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
    t = torch.from_numpy(np.array(img, dtype=np.uint8))
    return (t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)), decoded


def _check_memory(n: int, size: int, channels: int) -> None:
    """Refuse, before decoding, a folder whose images would not fit the model budget as float tensors."""
    need, allowed = n * channels * size * size * 4, budget.session_budget().memory_mb * 2**20
    if need > allowed:
        raise DatasetError(f"{n} images at {size}x{size} would take {need / 2**30:.1f} GiB as float tensors; this "
                           f"server allows {allowed / 2**30:.1f} GiB per student. Use fewer images or a smaller "
                           "input size.")


def _read_images(paths: list[PurePosixPath], read, size: int, channels: int, report: list | None):
    """Decode the class folders' images (``read(i)`` gives file i's bytes): (uint8 images, labels, names)."""
    classes = _classes(paths)
    _check_memory(sum(map(len, classes.values())), size, channels)
    out, labels, names, skipped, pixels, scans = [], [], [], [], 0, 0
    for name, idx in classes.items():
        got = 0
        for i in idx:
            try:
                if not paths[i].name.lower().endswith(IMAGE_EXTENSIONS):
                    raise images.ImageError("not an image file name")
                raw = read(i)
                scans += images.scan_work(raw)
                if scans > limits.FOLDER_SCAN_PIXELS:  # before decoding: a few kB can ask for seconds of work
                    raise DatasetError(f"The JPEGs of this folder hold more than {limits.FOLDER_SCAN_PIXELS / 1e9:,.0f}"
                                       " billion pixels counted once per scan (a progressive JPEG is decoded once per "
                                       "scan); use fewer or smaller pictures, or save them as ordinary JPEGs.")
                img, decoded = _decode(raw, size, channels)
            except images.ImageError as e:  # one bad picture is named and left out, not a reason to refuse
                skipped.append(Skipped(str(paths[i]), e.reason))
                continue
            pixels += decoded
            if pixels > limits.FOLDER_PIXELS:  # bounds the time: 2,000 megapixels decode in about 10-20 s
                raise DatasetError(f"The images of this folder hold more than {limits.FOLDER_PIXELS / 1e6:,.0f} "
                                   "megapixels in all; use fewer or smaller pictures.")
            out.append(img)
            labels.append(len(names))
            got += 1
        if got:
            names.append(name)
    if len(names) < 2:  # the error's text is escaped where it is shown (ui.friendly_errors): names in quotes here
        raise DatasetError(" ".join(filter(None, (
            "An image folder needs at least two class folders with images in them, like cats/1.jpg, cats/2.jpg, "
            "dogs/1.jpg (ImageFolder layout).", skipped_note(skipped, show=_shown)))))
    if skipped and report is not None:
        report.append(skipped_note(skipped))
    return torch.stack(out), torch.tensor(labels), names, skipped


def teacher_folders() -> dict[str, Path]:
    """ImageFolder datasets the teacher offers on the server: the sub-folders of $RESVIZ_IMAGE_FOLDERS.

    Students choose one by name; they never type a path, so they cannot read other folders of the server.
    """
    root = os.environ.get("RESVIZ_IMAGE_FOLDERS")
    if not root or not Path(root).is_dir():
        return {}
    return {p.name: p for p in sorted(Path(root).iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _from_zip(data: bytes, size: int, channels: int, report: list | None, max_files: int, max_bytes: int):
    _check_entries(data)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DatasetError(f"This is not a readable zip file ({e}).") from None
    with zf:
        files = _zip_listing(zf, max_files, max_bytes)  # sizes summed from the directory: at most max_bytes

        def read(i: int) -> bytes:
            _, info = files[i]
            if info.file_size > images.MAX_BYTES:  # the directory says so: refuse before unpacking
                raise images.ImageError(f"The file is {info.file_size / 2**20:.1f} MB; the limit is "
                                        f"{images.MAX_BYTES / 2**20:.1f} MB.")
            return _read_member(zf, info)

        return _read_images([p for p, _ in files], read, size, channels, report)


def _from_folder(root: Path, size: int, channels: int, report: list | None):
    files = [Path(d) / f for d, _, names in os.walk(root) for f in names]
    paths = [PurePosixPath(p.relative_to(root).as_posix()) for p in files]

    def read(i: int) -> bytes:
        try:
            if files[i].stat().st_size > images.MAX_BYTES:
                raise images.ImageError(f"The file is {files[i].stat().st_size / 2**20:.1f} MB; the limit is "
                                        f"{images.MAX_BYTES / 2**20:.1f} MB.")
            return files[i].read_bytes()
        except OSError as e:
            raise images.ImageError(f"it could not be read ({e.strerror or 'unknown reason'})") from None

    return _read_images(paths, read, size, channels, report)


def load_image_folder(path_or_zip_bytes: str | os.PathLike | bytes, size: int = 32, channels: int = 3,
                      test_fraction: float = 0.2, seed: int = 0, report: list | None = None,
                      max_bytes: int = limits.mb(limits.ZIP_MB)) -> FolderData:
    """A teacher's ImageFolder (one sub-folder per class), from a path or uploaded zip bytes, as tensors.

    Images are resized to ``size`` x ``size``; a seeded ``test_fraction`` of each class becomes the test
    split. Files that are not usable images are left out and named (``FolderData.skipped``, and a note in
    markdown goes into ``report``); unsafe or oversized zips raise DatasetError, and so does a folder left with
    fewer than two classes. ``max_bytes`` caps an uploaded zip, checked here on the server (the uploader's cap is
    the browser's).
    """
    if isinstance(path_or_zip_bytes, (bytes, bytearray)):
        if len(path_or_zip_bytes) > max_bytes:
            raise DatasetError(f"The zip is {len(path_or_zip_bytes) / 2**20:.1f} MB; the limit is "
                               f"{max_bytes / 2**20:.0f} MB. Zip fewer or smaller images.")
        x, y, names, skipped = _from_zip(bytes(path_or_zip_bytes), size, channels, report,
                                         MAX_ZIP_FILES, MAX_ZIP_BYTES)
    else:
        root = Path(path_or_zip_bytes)
        if not root.is_dir():
            raise DatasetError(f"{root.name or 'That'} is not a folder.")
        x, y, names, skipped = _from_folder(root, size, channels, report)
    g = torch.Generator().manual_seed(seed)
    test_idx = []
    for c in range(len(names)):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(len(idx) * test_fraction)) if len(idx) > 1 else 0
        test_idx.append(idx[:n_test])
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    test_mask[torch.cat(test_idx)] = True
    train = TensorDataset(_normalise(x[~test_mask]), y[~test_mask])
    test = TensorDataset(_normalise(x[test_mask]), y[test_mask])
    if len(test) == 0:
        test = train  # too few images to hold any out; say so
        if report is not None:
            report.append("Too few images to keep a test split: test accuracy is measured on the training images.")
    return FolderData(train, test, names, skipped)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1], worked in place on one float copy."""
    return x.float().div_(255).sub_(0.5).div_(0.5)
