"""Image loading: every accepted mode and format becomes upright RGB; every bad upload a plain ImageError."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from resviz.inputs import images
from resviz.inputs.images import ImageError, load_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb_test_image(w=40, h=30) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_each_format_loads_as_rgb(fmt):
    img = load_image(encode(rgb_test_image(), fmt))
    assert img.mode == "RGB" and img.size == (40, 30)
    a = np.asarray(img).astype(int)
    assert a[15, 5, 0] > 200 and a[15, 5, 2] < 60  # left half red (lossy formats: roughly)
    assert a[15, 35, 2] > 200 and a[15, 35, 0] < 60  # right half blue


def test_exif_rotation_is_applied():
    img = rgb_test_image(40, 20)  # wide, red left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; display rotated 90 degrees clockwise
    out = load_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)  # now tall
    a = np.asarray(out).astype(int)
    assert a[5, 10, 0] > 200 and a[35, 10, 2] > 200  # red went to the top, blue to the bottom


def test_grayscale_becomes_three_equal_channels():
    g = Image.fromarray(np.array([[0, 100], [200, 255]], np.uint8), "L")
    a = np.asarray(load_image(encode(g, "PNG")))
    assert a.shape == (2, 2, 3)
    np.testing.assert_array_equal(a[..., 0], [[0, 100], [200, 255]])
    np.testing.assert_array_equal(a[..., 0], a[..., 2])


def test_sixteen_bit_is_scaled_not_clipped():
    g = Image.fromarray(np.array([[0, 32768, 65535, 257]], np.uint16))  # mode I;16
    assert g.mode.startswith("I;16")
    a = np.asarray(load_image(encode(g, "PNG")))[..., 0]
    # 65535 -> 255, 32768 -> 32768/65535*255 = 127.5 -> 128, 257 -> 1: scaled, a clip would give 255 for all > 255
    np.testing.assert_array_equal(a, [[0, 128, 255, 1]])


def test_rgba_and_la_are_composited_on_white():
    rgba = Image.fromarray(np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], np.uint8), "RGBA")
    a = np.asarray(load_image(encode(rgba, "PNG"))).astype(int)
    np.testing.assert_array_equal(a[0, 0], [255, 0, 0])  # opaque red stays red
    np.testing.assert_array_equal(a[0, 1], [255, 255, 255])  # fully transparent -> white background
    assert 125 <= a[0, 2, 0] <= 128  # half-transparent black over white -> mid grey
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA")
    np.testing.assert_array_equal(np.asarray(load_image(encode(la, "PNG")))[0, :, 0], [255, 0])


def test_palette_image_uses_its_palette():
    p = Image.new("P", (2, 1))
    p.putpalette([0, 200, 0, 10, 20, 30] + [0] * 762)
    p.putdata([0, 1])
    a = np.asarray(load_image(encode(p, "PNG")))
    np.testing.assert_array_equal(a[0], [[0, 200, 0], [10, 20, 30]])
    p.info["transparency"] = 1  # palette entry 1 transparent -> white
    np.testing.assert_array_equal(np.asarray(load_image(encode(p, "PNG", transparency=1)))[0, 1], [255, 255, 255])


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta+yellow = red
    a = np.asarray(load_image(encode(cmyk, "JPEG", quality=95))).astype(int)
    assert a[8, 8, 0] > 220 and a[8, 8, 1] < 40 and a[8, 8, 2] < 40


def _png_with_header_size(w: int, h: int) -> bytes:
    """A tiny real PNG whose header claims w x h pixels (what a decompression bomb looks like before decoding)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello, I am a text file, not a picture" * 10, "not an image"),
    (_png_with_header_size(100_000, 100_000), "decompression bomb"),  # 10 gigapixels: Pillow's own guard
    (_png_with_header_size(8000, 8000), "64 megapixels"),  # 64 MP: under Pillow's guard, over ours
])
def test_bad_uploads_get_plain_messages(data, words):
    with pytest.raises(ImageError, match=words):
        load_image(data)


def test_truncated_file_is_refused():
    full = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    with pytest.raises(ImageError, match="damaged or cut short"):
        load_image(full[: len(full) // 2])


def test_huge_file_is_refused_before_decoding():
    with pytest.raises(ImageError, match="limit is 0.0 MB|limit is"):
        load_image(encode(rgb_test_image(), "BMP"), max_bytes=1000)


def test_pixel_limit_is_per_call():
    data = encode(rgb_test_image(40, 30), "PNG")
    with pytest.raises(ImageError, match="megapixels"):
        load_image(data, max_pixels=1000)  # 1200 pixels
    assert load_image(data, max_pixels=1200).size == (40, 30)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_preprocess_steps_shapes_and_hand_worked_normalization():
    img = Image.new("RGB", (100, 50), (255, 0, 128))
    pre = images.Preprocess(resize=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    steps = images.preprocess_steps(img, pre)
    assert steps["resized"].shape == (40, 80, 3)  # shorter side -> 40, aspect kept
    assert steps["cropped"].shape == (32, 32, 3)
    x = steps["normalized"]
    assert x.shape == (3, 32, 32)
    # (1 - 0.5)/0.5 = 1, (0 - 0.5)/0.25 = -2, (128/255 - 0.5)/1 = 0.00196
    np.testing.assert_allclose(x[:, 16, 16], [1.0, -2.0, 128 / 255 - 0.5], atol=1e-5)
    assert images.to_tensor(steps).shape == (1, 3, 32, 32)
    gray = images.to_tensor(steps, channels=1)
    assert gray.shape == (1, 1, 32, 32)
    assert abs(float(gray[0, 0, 16, 16]) - (1 - 2 + 128 / 255 - 0.5) / 3) < 1e-5


def test_preprocess_for_follows_torchvision_ratio():
    assert images.preprocess_for(224).resize == 256
    assert images.preprocess_for(32, imagenet=False).mean == images.TRAINING_MEAN == (0.5, 0.5, 0.5)


def test_bundled_samples_are_small_valid_images():
    names = images.sample_names()
    assert len(names) >= 3
    for n in names:
        data = images.sample_bytes(n)
        assert len(data) < 60_000
        assert load_image(data).mode == "RGB"
    with pytest.raises(ImageError):
        images.sample_bytes("../../etc/passwd")


def test_header_cut_short_is_refused_with_plain_words():
    full = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="damaged or cut short"):
        load_image(full[:300])  # Pillow fails while still reading the header


@pytest.mark.parametrize("w, h", [(1, 20000), (20000, 1), (11, 1000)])
def test_slivers_are_refused_from_the_header_with_the_stated_ratio(w, h):
    data = encode(Image.new("L", (w, h), 120), "PNG")
    assert len(data) < 1000  # a few hundred bytes that would scale to gigabytes by the short side
    with pytest.raises(ImageError, match=rf"{w} x {h} pixels: one side is [\d,]+ times the other.*up to 10:1"):
        load_image(data)


def test_a_ten_to_one_panorama_is_still_accepted_and_preprocessing_stays_small():
    img = load_image(encode(Image.new("RGB", (1000, 100), (9, 9, 9)), "PNG"))
    steps = images.preprocess_steps(img, images.preprocess_for(224))
    assert steps["resized"].shape == (256, 2560, 3) and steps["cropped"].shape == (224, 224, 3)


def test_preprocessing_refuses_a_sliver_it_is_handed_directly():
    with pytest.raises(ImageError, match="1 x 20000 pixels"):
        images.preprocess_steps(Image.new("RGB", (1, 20000)), images.preprocess_for(224))


def test_one_pixel_cap_for_uploads_and_folders():
    from resviz.inputs import data, limits

    assert images.MAX_PIXELS == limits.MAX_PIXELS and not hasattr(data, "MAX_IMAGE_PIXELS")
    assert images.MAX_ASPECT == limits.MAX_ASPECT
    with pytest.raises(ImageError, match="64 megapixels"):
        load_image(_png_with_header_size(8000, 8000), formats=images.FOLDER_FORMATS)


def test_folder_formats_are_only_for_folders():
    gif = encode(rgb_test_image(), "GIF")
    with pytest.raises(ImageError, match="not an image we can read"):
        load_image(gif)
    assert load_image(gif, formats=images.FOLDER_FORMATS).size == (40, 30)


# --- issue 20: work bounded by the file, every parser exception a plain ImageError ---------------------------
def many_scans(n: int, size: tuple[int, int] = (256, 256), mode: str = "L") -> bytes:
    """A progressive JPEG of ``n`` scans: Pillow's own (6 for grey), then its last scan again until there are n.

    A flat picture makes each scan a few bytes, yet the decoder goes over every pixel once per scan (the issue's
    0.24 MB file of 400 scans took 8 CPU-s)."""
    data = encode(Image.new(mode, size, 128), "JPEG", progressive=True, quality=90)
    last = data[data.rfind(b"\xff\xda"):-2]  # the last scan: its SOS header and entropy-coded data, before EOI
    assert data.endswith(b"\xff\xd9") and images.count_scans(data) < n
    return data[:-2] + last * (n - images.count_scans(data)) + b"\xff\xd9"


@pytest.fixture
def decodes(monkeypatch) -> list:
    """Every pixel decode Pillow starts (ImageFile.load), recorded, so a test can say 'refused before decoding'."""
    from PIL import ImageFile

    calls, load = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self.format) or load(self))
    return calls


def test_a_jpeg_of_400_scans_is_refused_before_a_pixel_is_decoded(decodes):
    data = many_scans(400)
    assert len(data) < 30_000 and images.count_scans(data) == 400
    with pytest.raises(ImageError, match=r"stored in 400 scans .*at most 64 are accepted") as e:
        load_image(data)
    assert decodes == [] and e.value.reason == "400 JPEG scans"
    with pytest.raises(ImageError, match="400 scans"):  # image folders use the same decoder and the same cap
        load_image(data, formats=images.FOLDER_FORMATS, draft=(32, 32))
    assert decodes == []


def test_jpegs_up_to_the_scan_limit_decode_and_real_encoders_stay_far_below_it(decodes):
    from resviz.inputs import limits

    assert load_image(many_scans(limits.JPEG_SCANS)).size == (256, 256) and "JPEG" in decodes
    photo = encode(rgb_test_image(64, 48), "JPEG", progressive=True)  # libjpeg's progressive script
    assert images.count_scans(photo) == 10 and load_image(photo).size == (64, 48)
    assert images.count_scans(encode(rgb_test_image(), "JPEG")) == 1  # baseline: one scan


def test_scan_markers_are_never_missed_and_jpeg_compressed_tiffs_are_counted_too():
    data = many_scans(70)
    padded = data.replace(b"\xff\xda", b"\xff\xff\xff\xda")  # fill bytes before a marker: still one scan each
    assert images.count_scans(padded) == 70
    with pytest.raises(ImageError, match="70 scans"):
        load_image(padded)
    tiff = encode(rgb_test_image(), "TIFF", compression="jpeg")  # folders accept TIFF; libtiff decodes it with libjpeg
    assert load_image(tiff, formats=images.FOLDER_FORMATS).size == (40, 30)
    with pytest.raises(ImageError, match="71 scans"):
        load_image(tiff + b"\xff\xda" * 70, formats=images.FOLDER_FORMATS)


def corrupt_exif_jpeg() -> bytes:
    """A JPEG whose EXIF says ImageWidth is the text 'Cam' (and Orientation 6): rewriting it raises struct.error."""
    entries = struct.pack(">HHI4s", 0x0100, 2, 4, b"Cam\0") + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    exif = b"Exif\0\0MM\0*" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)
    return encode(rgb_test_image(), "JPEG", exif=exif)


def test_a_corrupt_exif_tag_is_an_image_error_not_pillows_struct_error():
    from PIL import ImageOps

    data = corrupt_exif_jpeg()
    with pytest.raises(struct.error):  # what Pillow does with it: the exception the issue saw
        ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    with pytest.raises(ImageError, match=r"EXIF data .* is damaged") as e:
        load_image(data)
    assert e.value.reason == "corrupt EXIF"


@pytest.mark.parametrize("error", [struct.error("unpack requires a buffer of 4 bytes"), ZeroDivisionError(),
                                   KeyError(42), IndexError("list index out of range"), OSError("broken data stream"),
                                   RecursionError("maximum recursion depth exceeded")])
def test_whatever_pillow_raises_while_decoding_is_a_plain_image_error(error, monkeypatch):
    from PIL import ImageFile

    def fail(self):
        raise error
    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(ImageError, match=r"^The image file is damaged or cut short \(.+\)\. Try saving") as e:
        load_image(encode(rgb_test_image(), "PNG"))
    assert e.value.reason == "damaged"


def test_running_out_of_memory_is_not_called_a_damaged_file(monkeypatch):
    from PIL import ImageFile

    def fail(self):
        raise MemoryError
    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(MemoryError):
        load_image(encode(rgb_test_image(), "PNG"))


@pytest.mark.parametrize("fmt, formats", [("JPEG", images.FORMATS), ("PNG", images.FORMATS),
                                          ("WEBP", images.FORMATS), ("BMP", images.FORMATS),
                                          ("GIF", images.FOLDER_FORMATS), ("TIFF", images.FOLDER_FORMATS)])
def test_random_damage_to_any_format_gives_an_image_or_an_image_error(fmt, formats):
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6
    kw = {"exif": exif.tobytes()} if fmt in ("JPEG", "PNG", "WEBP", "TIFF") else {}
    data = encode(rgb_test_image(24, 16), fmt, **kw)
    for _ in range(150):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), rng.integers(1, 5)):
            bad[i] = rng.integers(0, 256)
        try:
            assert load_image(bytes(bad), formats=formats).mode == "RGB"
        except ImageError:
            pass
