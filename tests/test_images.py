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
