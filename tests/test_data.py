"""Datasets: the built-in shapes, torchvision's formats on tiny files written here, and safe ImageFolder zips."""
from __future__ import annotations

import io
import pickle
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from resviz.inputs import data as D

# --- built-in --------------------------------------------------------------------------------------------


def test_builtin_is_deterministic_balanced_and_normalised():
    tr1, te1, names = D.builtin_dataset(num_classes=5, n_train=50, n_test=20, size=16, seed=3)
    tr2, te2, _ = D.builtin_dataset(num_classes=5, n_train=50, n_test=20, size=16, seed=3)
    tr3, _, _ = D.builtin_dataset(num_classes=5, n_train=50, n_test=20, size=16, seed=4)
    assert names == ["disc", "square", "triangle", "cross", "ring"]
    assert tr1.tensors[0].shape == (50, 3, 16, 16) and te1.tensors[0].shape == (20, 3, 16, 16)
    assert torch.equal(tr1.tensors[0], tr2.tensors[0]) and torch.equal(te1.tensors[1], te2.tensors[1])
    assert not torch.equal(tr1.tensors[0], tr3.tensors[0])
    y = torch.cat([tr1.tensors[1], te1.tensors[1]])
    assert torch.bincount(y).tolist() == [14] * 5  # 70 images, 5 classes: exactly balanced
    assert tr1.tensors[0].min() >= -1 and tr1.tensors[0].max() <= 1


def test_builtin_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    D.builtin_dataset(n_train=8, n_test=4, size=8)
    assert torch.equal(torch.rand(3), expected)


def test_builtin_grey_and_bad_arguments():
    tr, _, _ = D.builtin_dataset(n_train=4, n_test=2, size=8, channels=1)
    assert tr.tensors[0].shape == (4, 1, 8, 8)
    with pytest.raises(D.DatasetError, match="2 to 10 classes"):
        D.builtin_dataset(num_classes=11)
    with pytest.raises(D.DatasetError, match="channels"):
        D.builtin_dataset(channels=2)


def test_shape_masks_worked_by_hand():
    # Local coordinates: the shape fills |u|, |v| < 1; points picked where the answer is obvious.
    u = torch.tensor([[[0.0, 0.7, 0.95, 0.0]]])
    v = torch.tensor([[[0.0, 0.0, 0.0, 0.7]]])
    freq = torch.tensor([2.0])
    disc, ring = D.SHAPES.index("disc"), D.SHAPES.index("ring")
    assert D._shape_mask(disc, u, v, freq).flatten().tolist() == [1, 1, 0, 1]
    assert D._shape_mask(ring, u, v, freq).flatten().tolist() == [0, 1, 0, 1]  # a hole in the middle
    # Horizontal stripes change along v only: sin(2*pi*v) > 0 for v in (0, 0.5), < 0 for v in (0.5, 1).
    hs = D.SHAPES.index("horizontal stripes")
    uu = torch.tensor([[[-0.5, 0.5, -0.5, 0.5]]])
    vv = torch.tensor([[[0.25, 0.25, 0.75, 0.75]]])
    assert D._shape_mask(hs, uu, vv, freq).flatten().tolist() == [1, 1, 0, 0]
    vs = D.SHAPES.index("vertical stripes")
    assert D._shape_mask(vs, vv, uu, freq).flatten().tolist() == [1, 1, 0, 0]


def test_adapt_dataset_channels_and_size():
    ds = torch.utils.data.TensorDataset(torch.ones(2, 1, 4, 4), torch.tensor([0, 1]))
    out = D.adapt_dataset(ds, size=8, channels=3)
    assert out.tensors[0].shape == (2, 3, 8, 8)
    torch.testing.assert_close(out.tensors[0], torch.ones(2, 3, 8, 8))  # a flat image stays flat
    back = D.adapt_dataset(out, channels=1)
    assert back.tensors[0].shape == (2, 1, 8, 8)


# --- torchvision formats ---------------------------------------------------------------------------------


def _write_cifar(root, n_per_batch=2, n_test=3):
    """A tiny CIFAR-10 folder in torchvision's layout: 5 train batches, a test batch and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else n_per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        if i == 0:
            data[0] = 0
            data[0, :1024] = 255  # first image: pure red (CIFAR stores R plane, then G, then B)
        labels = [(i + j) % 10 for j in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)


class CIFAR10NoMD5(datasets.CIFAR10):
    """torchvision's CIFAR10 reader with its md5 checks off: our tiny files cannot match the real checksums."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


def test_cifar10_layout_is_read_as_normalised_nchw(tmp_path):
    _write_cifar(tmp_path)
    train, test, names = D.load_torchvision_dataset("CIFAR10", tmp_path, classes={"CIFAR10": CIFAR10NoMD5})
    assert names[:2] == ["airplane", "automobile"] and len(names) == 10
    assert train.tensors[0].shape == (10, 3, 32, 32) and test.tensors[0].shape == (3, 3, 32, 32)
    red = train.tensors[0][0]
    assert torch.all(red[0] == 1.0) and torch.all(red[1:] == -1.0)  # 255 -> 1, 0 -> -1, channel order kept
    assert train.tensors[1][:2].tolist() == [0, 1] and test.tensors[1].tolist() == [5, 6, 7]
    few, _, _ = D.load_torchvision_dataset("CIFAR10", tmp_path, classes={"CIFAR10": CIFAR10NoMD5},
                                           max_train=4, max_test=1)
    assert len(few) == 4


def test_cifar10_with_wrong_checksums_is_unavailable_with_advice(tmp_path):
    _write_cifar(tmp_path)  # real torchvision CIFAR10: md5 of our fake files cannot match
    with pytest.raises(D.DatasetUnavailable, match="built-in dataset"):
        D.load_torchvision_dataset("CIFAR10", tmp_path)


def test_missing_dataset_and_failed_download(tmp_path):
    with pytest.raises(D.DatasetUnavailable, match="Offline"):
        D.load_torchvision_dataset("FashionMNIST", tmp_path)

    class Offline(datasets.MNIST):
        def download(self):
            raise OSError("no route to host")

    with pytest.raises(D.DatasetUnavailable, match="offline"):
        D.load_torchvision_dataset("MNIST", tmp_path, download=True, classes={"MNIST": Offline})
    with pytest.raises(D.DatasetUnavailable, match="Unknown dataset"):
        D.load_torchvision_dataset("ImageNet", tmp_path)


def _idx(path, arr: np.ndarray):
    """An MNIST idx file: magic (0x08 = uint8, ndim), big-endian sizes, then the bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + arr.ndim))
        f.write(struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.astype(np.uint8).tobytes())


def test_mnist_idx_files_load_as_one_channel(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    img = np.zeros((3, 28, 28), np.uint8)
    img[1] = 255
    _idx(raw / "train-images-idx3-ubyte", img)
    _idx(raw / "train-labels-idx1-ubyte", np.array([7, 2, 1]))
    _idx(raw / "t10k-images-idx3-ubyte", img[:2])
    _idx(raw / "t10k-labels-idx1-ubyte", np.array([0, 9]))
    train, test, names = D.load_torchvision_dataset("MNIST", tmp_path)
    assert train.tensors[0].shape == (3, 1, 28, 28) and train.tensors[1].tolist() == [7, 2, 1]
    assert train.tensors[0][0].max() == -1 and train.tensors[0][1].min() == 1
    assert len(names) == 10 and len(test) == 2


# --- ImageFolder zips ------------------------------------------------------------------------------------


def _png(color, size=(20, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def test_image_folder_zip_loads_resizes_splits_and_skips_non_images():
    members = {f"pets/cats/{i}.png": _png((255, 0, 0)) for i in range(5)}
    members |= {f"pets/dogs/{i}.png": _png((0, 0, 255)) for i in range(5)}
    members |= {"pets/dogs/notes.txt": b"not an image", "pets/cats/broken.jpg": b"\xff\xd8garbage"}
    report = []
    train, test, names = D.load_image_folder(_zip(members), size=8, report=report)
    assert names == ["cats", "dogs"]  # the wrapping "pets" folder is looked through
    assert len(train) == 8 and len(test) == 2  # 20% of 5 per class held out
    assert sorted(test.tensors[1].tolist()) == [0, 1]
    assert train.tensors[0].shape[1:] == (3, 8, 8)
    cat = train.tensors[0][train.tensors[1] == 0][0]
    assert torch.allclose(cat[0], torch.ones(8, 8)) and torch.allclose(cat[2], -torch.ones(8, 8))  # red
    assert report and "Skipped 2" in report[0]


def test_image_folder_from_a_path(tmp_path):
    for cls, col in (("a", (0, 0, 0)), ("b", (255, 255, 255))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.png").write_bytes(_png(col))
    train, test, names = D.load_image_folder(tmp_path, size=4, channels=1)
    assert names == ["a", "b"] and train.tensors[0].shape[1:] == (1, 4, 4)
    assert (len(train), len(test)) == (4, 2)  # round(3 * 0.2) = 1 test image per class
    assert sorted(train.tensors[0][:, 0, 0, 0].tolist()) == [-1, -1, 1, 1]  # black -> -1, white -> 1
    report = []
    tiny, same, _ = D.load_image_folder(tmp_path, size=4, test_fraction=0.0, report=report)
    assert same is tiny and "training images" in report[0]  # nothing held out: said, not hidden


def test_image_folder_needs_two_classes():
    with pytest.raises(D.DatasetError, match="two class folders"):
        D.load_image_folder(_zip({"only/1.png": _png((1, 2, 3)), "only/2.png": _png((1, 2, 3))}))
    with pytest.raises(D.DatasetError, match="not a readable zip"):
        D.load_image_folder(b"PK not really a zip")


def _bomb(w: int, h: int) -> bytes:
    """A 1x1 PNG whose header claims w x h pixels."""
    data = bytearray(_png((0, 0, 0), (1, 1)))
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _central(data: bytes | bytearray, name: str) -> int:
    """Offset of ``name``'s record in the zip's central directory."""
    at = data.find(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(name)] != name.encode():
        at = data.find(b"PK\x01\x02", at + 1)
    return at


def _flag_encrypted(data: bytes, name: str) -> bytes:
    """Set the 'encrypted' bit of ``name`` in its local header and central record (zipfile cannot encrypt)."""
    out = bytearray(data)
    out[out.find(name.encode()) - 30 + 6] |= 1
    out[_central(out, name) + 8] |= 1
    return bytes(out)


def _two_classes(**extra: bytes) -> dict[str, bytes]:
    members = {f"{c}/{i}.png": _png((40 * i, 0, 0)) for c in ("cats", "dogs") for i in range(3)}
    return members | extra


@pytest.mark.parametrize("evil", ["../escape.png", "cats/../../escape.png", "/etc/escape.png", "C:/escape.png"])
def test_zip_with_escaping_paths_is_rejected(tmp_path, monkeypatch, evil):
    monkeypatch.chdir(tmp_path / ".")  # a careless relative write would land here
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(D.DatasetError, match="unsafe path"):
        D.load_image_folder(_zip(_two_classes(**{evil: _png((0, 0, 0))})))
    assert not (tmp_path / "escape.png").exists() and not list((tmp_path / "sub").iterdir())


def test_zip_is_read_in_memory_and_leaves_no_temp_files(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp/mkstemp would write
    train, _, names = D.load_image_folder(_zip(_two_classes()), size=8)
    assert names == ["cats", "dogs"] and len(train) == 4
    with pytest.raises(D.DatasetError):
        D.load_image_folder(_zip(_two_classes(**{"cats": b"a file named like the folder"})))
    assert list(tmp_path.iterdir()) == []


def test_zip_bomb_and_too_many_files_are_rejected(monkeypatch):
    bomb = _zip({"a/big.png": b"\0" * (3 * 2**20)})  # 3 MiB of zeros compress to a few KB
    assert len(bomb) < 20_000
    monkeypatch.setattr(D, "MAX_ZIP_BYTES", 2**20)
    with pytest.raises(D.DatasetError, match="more than 1 MiB"):
        D.load_image_folder(bomb)
    monkeypatch.setattr(D, "MAX_ZIP_FILES", 3)
    many = _zip({f"c/{i}.png": _png((0, 0, 0)) for i in range(4)})
    with pytest.raises(D.DatasetError, match="4 files; at most 3"):
        D.load_image_folder(many)


def test_zip_whose_headers_understate_the_size_is_stopped_while_reading():
    data = bytearray(_zip(_two_classes(**{"cats/big.png": b"\0" * (2 * 2**20)})))
    # Shrink the declared uncompressed size in the central directory to 10 bytes: what comes out must be checked.
    cd = _central(data, "cats/big.png")
    data[cd + 24:cd + 28] = struct.pack("<I", 10)
    with pytest.raises(D.DatasetError, match="'cats/big.png' is damaged"):
        D.load_image_folder(bytes(data))


def test_an_uploaded_zip_over_its_cap_is_refused_on_the_server_before_reading():
    data = _zip(_two_classes())
    with pytest.raises(D.DatasetError, match=r"The zip is 0\.0 MB; the limit is 0 MB"):
        D.load_image_folder(data, max_bytes=len(data) - 1)
    assert D.load_image_folder(data, max_bytes=len(data))[2] == ["cats", "dogs"]
    with pytest.raises(D.DatasetError, match="the limit is 50 MB"):  # the default is the uploader's cap
        D.load_image_folder(data + b"\0" * (50 * 2**20))


@pytest.mark.parametrize("extra, words", [
    ({"cats": b"a file", "cats/9.png": _png((1, 2, 3))}, "a file and a folder both called 'cats'"),
    ({"cats/" + "a" * 300 + ".png": _png((1, 2, 3))}, "longer than 255 bytes"),
    ({"dogs/" + "b" * 300: b"x", "dogs/ok.png": _png((1, 2, 3))}, "'dogs/bbbbbbbbbbbbbbbbbbbbbbbbb…bbbbbbbbbbbbbbbbbbbbbbbbbbbbb'"),
])
def test_entries_that_would_clash_with_a_file_system_are_named(extra, words):
    with pytest.raises(D.DatasetError) as e:
        D.load_image_folder(_zip(_two_classes(**extra)))
    assert words in str(e.value) and "/tmp" not in str(e.value) and "Errno" not in str(e.value)


def test_encrypted_duplicate_and_unreadable_entries_are_named():
    plain = _zip(_two_classes(**{"cats/secret.png": _png((1, 2, 3))}))
    with pytest.raises(D.DatasetError, match="'cats/secret.png' is encrypted"):
        D.load_image_folder(_flag_encrypted(plain, "cats/secret.png"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for name, payload in [*_two_classes().items(), ("cats/0.png", _png((9, 9, 9)))]:
            z.writestr(name, payload)
    with pytest.raises(D.DatasetError, match="'cats/0.png' twice"):
        D.load_image_folder(buf.getvalue())
    odd = bytearray(_zip(_two_classes()))
    cd = _central(odd, "dogs/2.png")
    odd[cd + 10:cd + 12] = struct.pack("<H", 99)  # AES: a compression method zipfile lacks
    with pytest.raises(D.DatasetError, match="'dogs/2.png' uses a compression method"):
        D.load_image_folder(bytes(odd))


def test_slivers_and_oversized_images_are_skipped_by_the_one_decoder_and_named(tmp_path):
    report = []
    members = _two_classes(**{"cats/long.png": _png((9, 9, 9), (1, 20000)), "dogs/huge.png": _bomb(8000, 8000)})
    loaded = D.load_image_folder(_zip(members), size=8, report=report)
    train, test, names = loaded
    assert names == ["cats", "dogs"] and len(train) + len(test) == 6
    assert loaded.skipped == (D.Skipped("cats/long.png", "1 x 20000 pixels, a sliver"),
                              D.Skipped("dogs/huge.png", "8000 x 8000 pixels, too many"))
    assert report == [r"Skipped 2 files that are not usable images: cats/long\.png (1 x 20000 pixels, a sliver), "
                      r"dogs/huge\.png (8000 x 8000 pixels, too many)."]  # markdown: the names escaped
    only_slivers = {f"{c}/{i}.png": _png((9, 9, 9), (20000, 1)) for c in ("cats", "dogs") for i in range(2)}
    with pytest.raises(D.DatasetError, match=r"two class folders.*Skipped 4 files .*'cats/0.png' \(20000 x 1"):
        D.load_image_folder(_zip(only_slivers))
    for c in ("cats", "dogs"):  # a teacher's folder on disk: the same decoder, the same rule
        (tmp_path / c).mkdir()
        (tmp_path / c / "ok.png").write_bytes(_png((0, 0, 0)))
    (tmp_path / "cats" / "long.png").write_bytes(_png((0, 0, 0), (1, 20000)))
    loaded = D.load_image_folder(tmp_path, size=4)
    assert loaded[2] == ["cats", "dogs"] and loaded.skipped == (D.Skipped("cats/long.png", "1 x 20000 pixels, a sliver"),)


def test_decoded_pixels_and_float_memory_are_bounded_before_the_work(monkeypatch):
    monkeypatch.setattr(D.limits, "FOLDER_PIXELS", 5 * 20 * 12)  # five 20x12 pictures
    with pytest.raises(D.DatasetError, match="megapixels in all"):
        D.load_image_folder(_zip(_two_classes()))
    monkeypatch.setenv("RESVIZ_BUDGET_MB", "1")
    with pytest.raises(D.DatasetError, match=r"6 images at 256x256 would take 0\.0 GiB.*allows 0\.0 GiB"):
        D.load_image_folder(_zip(_two_classes()), size=256)


def test_a_big_jpeg_is_decoded_at_a_fraction_of_its_size():
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 10, 10)).save(buf, "JPEG")
    img, decoded = D._decode(buf.getvalue(), 32, 3)
    assert img.shape == (3, 32, 32) and decoded == 500 * 375  # 1/8 scale: 64x less work than 12 MP
    assert abs(int(img[0, 16, 16]) - 200) < 8


# --- issue 20: a zip's work bounded by its size, one bad picture skipped and named ---------------------------
def nested_zip(depth: int = 32_000, tops: str = "ab") -> bytes:
    """The issue's zip: one entry per top folder, each ``depth`` folders deep ('a/a/a/.../x.png', 64 kB a name).
    The set of every path's parents held depth^2 / 2 path parts: 3.9 GB and 103 s for a 512 kB zip before."""
    return _zip({f"{top}/" * depth + "x.png": b"x" for top in tops})


def _peak_mb(call) -> float:
    """The most memory Python allocated while ``call()`` ran (tracemalloc: allocations, not the OS's view)."""
    import tracemalloc

    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def test_a_zip_of_deeply_nested_folders_is_refused_from_its_names_in_bounded_memory():
    data = nested_zip()
    assert 250_000 < len(data) < 300_000  # the 269 kB

    def load():
        with pytest.raises(D.DatasetError, match=r"^The zip entry 'a/a/a.*' is nested more than 16 folders deep"):
            D.load_image_folder(data)
    assert _peak_mb(load) < 20  # the zip's own directory (two 64 kB names) and a little: not depth squared


def test_paths_up_to_the_depth_and_length_limits_load_and_one_more_is_refused():
    from resviz.inputs import limits

    wrap = "w/" * (limits.PATH_DEPTH - 2)  # 14 wrapping folders + class folder + file = 16 parts
    deep = _zip({f"{wrap}{k}": v for k, v in _two_classes().items()})
    assert D.load_image_folder(deep, size=8)[2] == ["cats", "dogs"]
    with pytest.raises(D.DatasetError, match="nested more than 16 folders deep"):
        D.load_image_folder(_zip({f"w/{wrap}{k}": v for k, v in _two_classes().items()}))
    long = "/".join(["n" * 250] * 5) + "/cats/1.png"  # each part under 255 bytes, the path over 1,024
    with pytest.raises(D.DatasetError, match=r"'nnnn.*' has a path longer than 1,024 bytes"):
        D.load_image_folder(_zip(_two_classes(**{long: _png((1, 2, 3))})))
    with pytest.raises(D.DatasetError, match="nested more than 16"):  # folder entries are checked too
        D.load_image_folder(_zip(_two_classes(**{"x/" * 20: b""})))


def test_a_zip_of_too_many_entries_is_refused_before_zipfile_parses_its_directory(monkeypatch):
    eight = _zip(_two_classes(**{"dogs/x.png": _png((1, 2, 3)), "cats/y.png": _png((1, 2, 3))}))
    seven = _zip(_two_classes(**{"dogs/x.png": _png((1, 2, 3))}))
    monkeypatch.setattr(D.limits, "ZIP_ENTRIES", 7)
    parsed, parse = [], zipfile.ZipFile
    monkeypatch.setattr(D.zipfile, "ZipFile", lambda *a, **kw: parsed.append(a) or parse(*a, **kw))
    with pytest.raises(D.DatasetError, match=r"The zip has 8 entries; at most 7 are accepted"):
        D.load_image_folder(eight)
    assert parsed == []
    assert D.load_image_folder(seven, size=8)[2] == ["cats", "dogs"]
    assert len(parsed) == 1  # seven entries: parsed and loaded


def test_duplicates_and_file_folder_clashes_are_found_from_the_sorted_paths():
    for extra, words in [({"cats/0.png/z.png": b"z"}, "a file and a folder both called 'cats/0.png'"),
                         ({"dogs/": b"", "dogs/0.png/": b""}, "a file and a folder both called 'dogs/0.png'"),
                         ({"cats\\2.png": b"z"}, "'cats\\\\2.png' twice"),
                         ({"cats/1.png-x.png": _png((1, 1, 1)), "cats/1.png!.png": _png((1, 1, 1))}, None)]:
        members = _two_classes(**extra)
        if words is None:  # names that sort between 'cats/1.png' and 'cats/1.png/...' are no clash
            assert len(D.load_image_folder(_zip(members)).skipped) == 0
            continue
        with pytest.raises(D.DatasetError, match=re.escape(words)):
            D.load_image_folder(_zip(members))


def test_one_corrupt_picture_is_skipped_and_named_not_a_reason_to_refuse_the_folder():
    from test_images import corrupt_exif_jpeg, many_scans

    report = []
    members = _two_classes(**{"cats/a.jpg": corrupt_exif_jpeg(), "dogs/b.jpg": many_scans(400),
                              "dogs/<img src=x>.png": b"\x89PNG\r\n\x1a\n broken"})
    loaded = D.load_image_folder(_zip(members), size=8, report=report)
    assert loaded[2] == ["cats", "dogs"] and len(loaded[0]) + len(loaded[1]) == 6
    assert loaded.skipped == (D.Skipped("cats/a.jpg", "corrupt EXIF"),
                              D.Skipped("dogs/<img src=x>.png", "not an image"),
                              D.Skipped("dogs/b.jpg", "400 JPEG scans"))
    assert report == [r"Skipped 3 files that are not usable images: cats/a\.jpg (corrupt EXIF), "
                      r"dogs/\<img src=x\>\.png (not an image), dogs/b\.jpg (400 JPEG scans)."]
    train, test, names = pickle.loads(pickle.dumps(loaded))  # a shared cache may copy it: the names come along
    assert names == ["cats", "dogs"] and pickle.loads(pickle.dumps(loaded)).skipped == loaded.skipped


def test_a_folder_is_refused_only_when_too_few_good_pictures_remain():
    from test_images import corrupt_exif_jpeg

    members = {"cats/1.png": _png((1, 2, 3)), **{f"dogs/{i}.jpg": corrupt_exif_jpeg() for i in range(7)}}
    with pytest.raises(D.DatasetError, match=r"two class folders.*Skipped 7 files .*'dogs/0\.jpg' \(corrupt EXIF\)"
                                             r".*'dogs/4\.jpg' \(corrupt EXIF\) and 2 more\.$"):
        D.load_image_folder(_zip(members))


def test_a_folder_of_many_scan_jpegs_is_refused_before_the_one_that_would_cross_the_budget(monkeypatch):
    from test_images import many_scans

    from resviz.inputs import images, limits

    jpeg = many_scans(limits.JPEG_SCANS, (512, 512))  # accepted alone: 64 scans of 0.26 MP, 16.8 M pixel-scans
    assert images.scan_work(jpeg) == 512 * 512 * 64 and images.scan_work(_png((1, 1, 1))) == 0
    decoded, decode = [], D._decode
    monkeypatch.setattr(D, "_decode", lambda data, *a: decoded.append(data) or decode(data, *a))
    monkeypatch.setattr(D.limits, "FOLDER_SCAN_PIXELS", 3 * 512 * 512 * 64)  # three such pictures
    members = {f"{c}/{i}.jpg": jpeg for c in ("cats", "dogs") for i in range(2)}
    with pytest.raises(D.DatasetError, match="more than 0 billion pixels counted once per scan"):
        D.load_image_folder(_zip(members))
    assert len(decoded) == 3  # the fourth was refused from its header and its bytes
    monkeypatch.setattr(D.limits, "FOLDER_SCAN_PIXELS", 4 * 512 * 512 * 64)
    assert D.load_image_folder(_zip(members), size=8)[2] == ["cats", "dogs"]
