"""Tests for analysis.io: format sniffing, header parsing, caps before decoding, round trips, bad files."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

import analysis.io as aio
from analysis.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from analysis.io import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    encode_png,
    load_image,
    load_image_file,
    read_header,
    sniff_format,
    to_uint8,
)

CORRUPT = "truncated or corrupt"


# ------------------------------------------------------------------------------------------------------ builders
def _ramp8(h: int = 40, w: int = 50) -> np.ndarray:
    """Deterministic uint8 test pattern that uses the whole 0..255 range."""
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx * 7 + yy * 13) % 256).astype(np.uint8)


def _ramp16(h: int = 40, w: int = 50) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx * 1301 + yy * 977) % 65536).astype(np.uint16)


def _colour8(h: int = 40, w: int = 50) -> np.ndarray:
    a = _ramp8(h, w)
    return np.dstack([a, 255 - a, (a // 3).astype(np.uint8)])  # channel order depends on the writer


def _luma(r, g, b, full_scale: float) -> np.ndarray:
    return (0.299 * np.asarray(r, float) + 0.587 * np.asarray(g, float) + 0.114 * np.asarray(b, float)) / full_scale


def _cv2(ext: str, image: np.ndarray, params: tuple = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _pil(image: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    image.save(b, format=fmt, **kw)
    return b.getvalue()


def _tiff(image_or_pages, **kw) -> bytes:
    b = io.BytesIO()
    pages = image_or_pages if isinstance(image_or_pages, list) else [image_or_pages]
    with tifffile.TiffWriter(b, bigtiff=kw.pop("bigtiff", False), byteorder=kw.pop("byteorder", None)) as tw:
        for page in pages:
            tw.write(page, metadata=None, **kw)
    return b.getvalue()


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def _crafted_png(width: int, height: int, *, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG whose IHDR claims width x height but whose IDAT holds just one zero row."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + min(width, 100_000)), 9)
    return aio._PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _crafted_tiff(width: int, height: int, pixels: bytes = b"", *, bo: str = "<", big: bool = False,
                  bits: int = 8, samples: int = 1, photometric: int = 1, sample_format: int = 1,
                  ifd_offset: int | None = None, next_ifd: int | None = 0, extra_ifds: int = 0) -> bytes:
    """Hand-built uncompressed single-strip TIFF (classic or BigTIFF, either byte order).

    next_ifd: offset written after IFD0 (None: point back at IFD0 itself, a loop). extra_ifds: number of empty IFDs
    chained after IFD0 (for page counting).
    """
    off_fmt, count_fmt, entry_fmt, field = ("Q", "Q", "HHQ", 8) if big else ("I", "H", "HHI", 4)
    header = (b"II" if bo == "<" else b"MM") + (
        struct.pack(bo + "HHHQ", 43, 8, 0, 0) if big else struct.pack(bo + "HI", 42, 0))
    data_pos = len(header)
    ifd0 = data_pos + len(pixels)
    ifd0 += ifd0 % 2
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 1), (262, 3, photometric),
               (273, 4, data_pos), (277, 3, samples), (278, 4, height), (279, 4, len(pixels)),
               (339, 3, sample_format)]

    def ifd(items, nxt):
        out = struct.pack(bo + count_fmt, len(items))
        for tag, typ, value in items:
            v = struct.pack(bo + ("H" if typ == 3 else "I"), value).ljust(field, b"\x00")
            out += struct.pack(bo + entry_fmt, tag, typ, 1) + v
        return out + struct.pack(bo + off_fmt, nxt)

    size0 = len(ifd(entries, 0))
    empty = len(ifd([], 0))
    chain = b""
    for i in range(extra_ifds):
        here = ifd0 + size0 + i * empty
        chain += ifd([], here + empty if i + 1 < extra_ifds else 0)
    if extra_ifds:
        nxt = ifd0 + size0
    else:
        nxt = ifd0 if next_ifd is None else next_ifd
    first = ifd0 if ifd_offset is None else ifd_offset
    header = header[:-field] + struct.pack(bo + off_fmt, first)
    body = pixels + b"\x00" * (ifd0 - data_pos - len(pixels))
    return header + body + ifd(entries, nxt) + chain


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _patch_sof(jpeg: bytes, width: int, height: int) -> bytes:
    pos = jpeg.index(b"\xff\xc0")
    return jpeg[: pos + 5] + struct.pack(">HH", height, width) + jpeg[pos + 9:]


# ------------------------------------------------------------------------------------------------------- sniffing
@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (aio._PNG_SIGNATURE + b"rest", "png"),
        (b"\xff\xd8\xff\xe0rest", "jpeg"),
        (b"II*\x00rest", "tiff"),
        (b"MM\x00*rest", "tiff"),
        (b"II+\x00rest", "tiff"),
        (b"BM" + b"\x00" * 12 + struct.pack("<I", 40), "bmp"),
    ],
)
def test_sniff_format_by_magic_bytes(data, fmt):
    assert sniff_format(data) == fmt


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"hello, this is a text file\n", "text"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"PK\x03\x04\x14\x00\x00\x00", "ZIP"),
        (b"GIF89a\x01\x00\x01\x00", "GIF"),
        (b"BM" + b"\x00" * 12 + struct.pack("<I", 99), ""),  # 'BM' but no known BMP header size
        (b"\x00\x01\x02\x03\x04\xfe", ""),
    ],
)
def test_non_images_are_refused_by_content(data, hint):
    with pytest.raises(UnsupportedFormatError, match="report.png is not a PNG, JPEG, TIFF or BMP image") as e:
        load_image(data, name="report.png")
    assert hint in str(e.value)
    with pytest.raises(UnsupportedFormatError):
        sniff_format(data)


def test_empty_bytes_refused():
    with pytest.raises(UnsupportedFormatError, match=r"empty.png is empty \(0 bytes\)"):
        load_image(b"", name="empty.png")
    with pytest.raises(UnsupportedFormatError):
        sniff_format(b"")


def test_mislabelled_extension_uses_the_bytes():
    a = _ramp8()
    image, meta = load_image(_cv2(".jpg", a, (cv2.IMWRITE_JPEG_QUALITY, 100)), name="photo.png")
    assert meta.format == "jpeg"
    assert np.abs(image - a / 255.0).max() < 0.03
    _, meta = load_image(_cv2(".png", a), name="scan.jpg")
    assert meta.format == "png"


# ---------------------------------------------------------------------------------------------------- round trips
def test_png_8bit_grey_exact():
    a = _ramp8()
    image, meta = load_image(_cv2(".png", a))
    assert image.dtype == np.float32 and image.shape == (40, 50)
    np.testing.assert_allclose(image, a / 255.0, atol=1e-6)
    assert (meta.format, meta.width, meta.height, meta.bit_depth, meta.channels, meta.n_pages) == (
        "png", 50, 40, 8, 1, 1)
    assert meta.notes == ()


def test_png_16bit_grey_divides_by_65535():
    a = _ramp16()
    image, meta = load_image(_cv2(".png", a))
    np.testing.assert_allclose(image, a / 65535.0, atol=1e-6)
    assert meta.bit_depth == 16 and meta.channels == 1


def test_png_colour_becomes_luminance():
    bgr = _colour8()
    image, meta = load_image(_cv2(".png", bgr))
    np.testing.assert_allclose(image, _luma(bgr[..., 2], bgr[..., 1], bgr[..., 0], 255.0), atol=1e-5)
    assert meta.channels == 3 and any("luminance" in n for n in meta.notes)


def test_png_pure_primaries_have_rec601_weights():
    bgr = np.zeros((1, 3, 3), np.uint8)
    bgr[0, 0, 2] = 255  # red
    bgr[0, 1, 1] = 255  # green
    bgr[0, 2, 0] = 255  # blue
    image, _ = load_image(_cv2(".png", bgr))
    np.testing.assert_allclose(image[0], [0.299, 0.587, 0.114], atol=1e-6)


def test_png_16bit_colour_with_alpha_drops_alpha():
    bgra = np.zeros((10, 12, 4), np.uint16)
    bgra[..., 1] = 65535  # green
    bgra[..., 3] = np.arange(12, dtype=np.uint16) * 5000  # varying alpha must not change the result
    image, meta = load_image(_cv2(".png", bgra))
    np.testing.assert_allclose(image, 0.587, atol=1e-6)
    assert (meta.bit_depth, meta.channels) == (16, 4)
    assert any("alpha" in n for n in meta.notes)


def test_png_1bit_bilevel():
    mask = _ramp8() > 100
    image, meta = load_image(_pil(Image.fromarray(mask), "PNG"))
    np.testing.assert_array_equal(image, mask.astype(np.float32))
    assert meta.bit_depth == 1


def test_jpeg_grey_and_colour():
    a = _ramp8(64, 80)
    a = cv2.GaussianBlur(a, (0, 0), 2)  # smooth, so JPEG error is small
    image, meta = load_image(_cv2(".jpg", a, (cv2.IMWRITE_JPEG_QUALITY, 98)))
    assert (meta.format, meta.width, meta.height, meta.bit_depth, meta.channels) == ("jpeg", 80, 64, 8, 1)
    assert np.abs(image - a / 255.0).mean() < 0.01
    bgr = np.dstack([a, a, a])
    image_c, meta_c = load_image(_cv2(".jpg", bgr, (cv2.IMWRITE_JPEG_QUALITY, 98)))
    assert meta_c.channels == 3
    assert np.abs(image_c - a / 255.0).mean() < 0.01


@pytest.mark.parametrize("params", [(cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 1)])
def test_jpeg_progressive_and_restart_markers_are_complete(params):
    a = cv2.GaussianBlur(_ramp8(64, 80), (0, 0), 2)
    data = _cv2(".jpg", a, params)
    image, meta = load_image(data)
    assert meta.width == 80 and meta.height == 64
    assert np.abs(image - a / 255.0).mean() < 0.02


def test_jpeg_huffman_table_before_frame_header_is_not_taken_for_a_size():
    """DHT (0xC4) sits in the SOF range but is not a frame header; a copy placed before SOF0 must be skipped."""
    a = cv2.GaussianBlur(_ramp8(64, 80), (0, 0), 2)
    data = _cv2(".jpg", a)
    dht_pos = data.index(b"\xff\xc4")
    (dht_len,) = struct.unpack_from(">H", data, dht_pos + 2)
    dht = data[dht_pos: dht_pos + 2 + dht_len]
    sof_pos = data.index(b"\xff\xc0")
    assert sof_pos < dht_pos  # libjpeg writes SOF first; move a copy of the table in front of it
    reordered = data[:sof_pos] + dht + data[sof_pos:]
    image, meta = load_image(reordered)
    assert (meta.width, meta.height) == (80, 64) and image.shape == (64, 80)


def test_jpeg_header_skips_lookalike_segments_and_fill_bytes():
    """A DHT/DAC/JPG segment whose payload looks like a huge frame header, then fill bytes, then the real SOF0."""
    fake = struct.pack(">BHHB", 8, 60000, 60000, 1) + b"\x00" * 4
    sof = struct.pack(">BHHB", 8, 80, 100, 1) + b"\x01\x11\x00"
    data = (b"\xff\xd8" + _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + _jpeg_segment(0xC4, fake) + _jpeg_segment(0xCC, fake) + _jpeg_segment(0xC8, fake)
            + b"\xff\xff" + _jpeg_segment(0xC0, sof) + b"\xff\xd9")
    meta = read_header(data, "jpeg")
    assert (meta.width, meta.height, meta.bit_depth, meta.channels) == (100, 80, 8, 1)


@pytest.mark.parametrize("sof", [0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCF])
def test_jpeg_header_reads_every_sof_kind(sof):
    data = b"\xff\xd8" + _jpeg_segment(sof, struct.pack(">BHHB", 12, 7, 9, 3) + b"\x00" * 9) + b"\xff\xd9"
    meta = read_header(data, "jpeg")
    assert (meta.width, meta.height, meta.bit_depth, meta.channels) == (9, 7, 12, 3)


def test_jpeg_with_trailing_bytes_after_end_marker_loads():
    a = _ramp8()
    data = _cv2(".jpg", a) + b"\x00" * 64 + b"camera trailer"
    image, _ = load_image(data)
    assert image.shape == (40, 50)


def test_tiff_8bit_and_16bit_grey_exact():
    a8, a16 = _ramp8(), _ramp16()
    image, meta = load_image(_tiff(a8))
    np.testing.assert_allclose(image, a8 / 255.0, atol=1e-6)
    assert (meta.format, meta.bit_depth, meta.channels, meta.n_pages) == ("tiff", 8, 1, 1)
    image, meta = load_image(_tiff(a16))
    np.testing.assert_allclose(image, a16 / 65535.0, atol=1e-6)
    assert meta.bit_depth == 16


@pytest.mark.parametrize(("bigtiff", "byteorder"), [(False, ">"), (True, "<"), (True, ">")])
def test_tiff_byte_orders_and_bigtiff(bigtiff, byteorder):
    a = _ramp16()
    data = _tiff(a, bigtiff=bigtiff, byteorder=byteorder)
    assert data[:2] == (b"MM" if byteorder == ">" else b"II")
    image, meta = load_image(data)
    np.testing.assert_allclose(image, a / 65535.0, atol=1e-6)
    assert (meta.width, meta.height) == (50, 40)


def test_tiff_rgb_contiguous_planar_and_compressed_agree():
    rgb = _colour8()
    expected = _luma(rgb[..., 0], rgb[..., 1], rgb[..., 2], 255.0)
    variants = {
        "contig": _tiff(rgb, photometric="rgb"),
        "planar": _tiff(np.moveaxis(rgb, -1, 0).copy(), photometric="rgb", planarconfig="separate"),
        "deflate": _tiff(rgb, photometric="rgb", compression="zlib"),
        "lzw (decoded by OpenCV)": _pil(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"),
    }
    for label, data in variants.items():
        image, meta = load_image(data, name=label)
        assert meta.channels == 3, label
        np.testing.assert_allclose(image, expected, atol=1e-5, err_msg=label)


def test_tiff_16bit_rgb():
    rgb = np.dstack([_ramp16(), 65535 - _ramp16(), _ramp16() // 2])
    image, meta = load_image(_tiff(rgb, photometric="rgb"))
    np.testing.assert_allclose(image, _luma(rgb[..., 0], rgb[..., 1], rgb[..., 2], 65535.0), atol=1e-5)
    assert (meta.bit_depth, meta.channels) == (16, 3)


def test_tiff_multipage_reads_first_page_with_note():
    pages = [_ramp8(), 255 - _ramp8(), np.zeros((40, 50), np.uint8)]
    image, meta = load_image(_tiff(pages))
    np.testing.assert_allclose(image, pages[0] / 255.0, atol=1e-6)
    assert meta.n_pages == 3
    assert "3 pages; only the first was analysed" in meta.notes


def test_tiff_bilevel_and_min_is_white():
    mask = _ramp8() > 100
    image, meta = load_image(_pil(Image.fromarray(mask), "TIFF"))
    np.testing.assert_array_equal(image, mask.astype(np.float32))
    assert meta.bit_depth == 1
    a = _ramp8()
    image, _ = load_image(_tiff(a, photometric="miniswhite"))
    np.testing.assert_allclose(image, 1.0 - a / 255.0, atol=1e-6)


def test_tiff_palette_is_looked_up():
    idx = _ramp8()
    cmap = np.zeros((3, 256), np.uint16)
    cmap[0] = np.arange(256) * 257  # index i -> red i/255
    image, meta = load_image(_tiff(idx, photometric="palette", colormap=cmap))
    np.testing.assert_allclose(image, 0.299 * idx / 255.0, atol=1e-5)
    assert meta.channels == 1


def test_hand_built_tiff_both_byte_orders():
    pixels = bytes(range(12))
    for bo in "<>":
        for big in (False, True):
            image, meta = load_image(_crafted_tiff(4, 3, pixels, bo=bo, big=big))
            np.testing.assert_allclose(image, np.arange(12).reshape(3, 4) / 255.0, atol=1e-6)


def test_tiff_directory_loop_and_page_cap():
    pixels = bytes(range(12))
    image, meta = load_image(_crafted_tiff(4, 3, pixels, next_ifd=None))  # IFD0 points back at itself
    assert meta.n_pages == 1 and image.shape == (3, 4)
    meta = read_header(_crafted_tiff(4, 3, pixels, extra_ifds=aio._MAX_TIFF_PAGES + 50), "tiff")
    assert meta.n_pages == aio._MAX_TIFF_PAGES
    meta = read_header(_crafted_tiff(4, 3, pixels, next_ifd=10**9), "tiff")  # next page outside the file
    assert meta.n_pages == 1


def test_bmp_grey_colour_bilevel():
    a = _ramp8()
    image, meta = load_image(_cv2(".bmp", a))
    np.testing.assert_allclose(image, a / 255.0, atol=1e-6)
    assert (meta.format, meta.bit_depth, meta.channels) == ("bmp", 8, 1)
    bgr = _colour8()
    image, meta = load_image(_cv2(".bmp", bgr))
    np.testing.assert_allclose(image, _luma(bgr[..., 2], bgr[..., 1], bgr[..., 0], 255.0), atol=1e-5)
    assert meta.channels == 3
    mask = a > 100
    image, meta = load_image(_pil(Image.fromarray(mask), "BMP"))
    np.testing.assert_array_equal(image, mask.astype(np.float32))
    assert (meta.bit_depth, meta.channels) == (1, 1)


def test_bmp_top_down_negative_height():
    bgr = _colour8(6, 5)
    data = _cv2(".bmp", bgr)
    offset = struct.unpack_from("<I", data, 10)[0]
    stride = (5 * 3 + 3) // 4 * 4
    rows = [data[offset + i * stride: offset + (i + 1) * stride] for i in range(6)]
    flipped = bytearray(data[:offset] + b"".join(reversed(rows)))
    struct.pack_into("<i", flipped, 22, -6)
    image, meta = load_image(bytes(flipped))
    assert meta.height == 6
    np.testing.assert_allclose(image, load_image(data)[0], atol=1e-6)


def test_bmp_colour_palette():
    pal = Image.fromarray(_colour8()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    data = _pil(pal, "BMP")
    image, meta = load_image(data)
    expected = np.asarray(pal.convert("RGB")).astype(float)
    np.testing.assert_allclose(image, _luma(expected[..., 0], expected[..., 1], expected[..., 2], 255.0), atol=1e-5)
    assert meta.channels == 3


# --------------------------------------------------------------------------------------------- caps before decoding
def test_crafted_png_claiming_50000_px_square_refused_from_header():
    data = _crafted_png(50000, 50000)
    assert len(data) < 1000  # tiny file; decoding it would need 2.5 GB
    meta = read_header(data, "png")
    assert (meta.width, meta.height) == (50000, 50000)
    with pytest.raises(ImageTooLargeError) as e:
        load_image(data, name="bomb.png")
    assert str(e.value) == (
        "bomb.png: image is 50000 x 50000 px = 2500 MP; the limit is 50 MP (setting 'image size cap')")


@pytest.mark.parametrize(("bo", "big"), [("<", False), (">", False), ("<", True), (">", True)])
def test_crafted_tiff_claiming_100000_px_square_refused(bo, big):
    data = _crafted_tiff(100_000, 100_000, b"\x00" * 16, bo=bo, big=big)
    assert len(data) < 500
    with pytest.raises(ImageTooLargeError, match="100000 x 100000 px = 10000 MP"):
        load_image(data)


def test_crafted_jpeg_and_bmp_claiming_huge_size_refused():
    jpeg = _patch_sof(_cv2(".jpg", _ramp8()), 60000, 60000)
    assert read_header(jpeg, "jpeg").width == 60000
    with pytest.raises(ImageTooLargeError, match="60000 x 60000"):
        load_image(jpeg)
    bmp = bytearray(_cv2(".bmp", _ramp8()))
    struct.pack_into("<ii", bmp, 18, 100_000, -100_000)
    assert len(bmp) < 5000
    with pytest.raises(ImageTooLargeError, match="100000 x 100000"):
        load_image(bytes(bmp))


def test_pixel_cap_boundary_and_default():
    data = _cv2(".png", _ramp8())  # 50 x 40 = 2000 px
    load_image(data, max_pixels=2000)
    with pytest.raises(ImageTooLargeError, match="the limit is 0 MP"):
        load_image(data, max_pixels=1999)
    assert DEFAULT_MAX_PIXELS >= 2592 * 1944
    image, _ = load_image(_cv2(".png", np.zeros((1944, 2592), np.uint8)), max_pixels=DEFAULT_MAX_PIXELS)
    assert image.shape == (1944, 2592)


def test_byte_cap():
    data = _cv2(".png", _ramp8())
    load_image(data, max_bytes=len(data))
    with pytest.raises(ImageTooLargeError, match=r"big.png is .* MB; the limit is .* \(setting 'file size cap'\)"):
        load_image(data, name="big.png", max_bytes=len(data) - 1)
    assert DEFAULT_MAX_BYTES == 200 * 1024 * 1024


# ------------------------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("fraction", [0.2, 0.6, 0.95])
def test_truncated_files_fail_cleanly(fraction):
    a = _ramp8(64, 80)
    for fmt, data in {"png": _cv2(".png", a), "jpeg": _cv2(".jpg", a), "tiff": _tiff(a), "bmp": _cv2(".bmp", a)
                      }.items():
        cut = data[: int(len(data) * fraction)]
        with pytest.raises(InvalidImageError, match=CORRUPT):
            load_image(cut, name=f"cut.{fmt}")


def test_jpeg_missing_only_its_end_marker_is_refused():
    data = _cv2(".jpg", _ramp8())
    assert data.endswith(b"\xff\xd9")
    with pytest.raises(InvalidImageError, match="end-of-image"):
        load_image(data[:-2] + b"\x00" * 8)


def test_png_missing_iend_and_bad_crc_refused():
    data = _cv2(".png", _ramp8())
    with pytest.raises(InvalidImageError, match="IEND"):
        load_image(data[:-12])
    long_iend = data[:-12] + struct.pack(">I", 4) + b"IEND" + b"\x00" * 6  # IEND claims 4 data bytes + CRC
    with pytest.raises(InvalidImageError, match="IEND chunk is cut off"):
        load_image(long_iend)
    bad = bytearray(data)
    idat = data.index(b"IDAT")
    bad[idat + 10] ^= 0xFF  # corrupt compressed data; CRC no longer matches
    with pytest.raises(InvalidImageError, match=CORRUPT):
        load_image(bytes(bad))


def test_tiff_bad_structures_refused():
    with pytest.raises(InvalidImageError, match="first TIFF directory lies outside"):
        load_image(_crafted_tiff(4, 3, bytes(12), ifd_offset=10**6))
    with pytest.raises(InvalidImageError, match="TIFF header is incomplete"):
        load_image(b"II*\x00\x08\x00")
    with pytest.raises(InvalidImageError, match="BigTIFF header is malformed"):
        load_image(b"II+\x00\x04\x00\x00\x00" + b"\x00" * 8)
    with pytest.raises(InvalidImageError, match="pixel data lies outside"):
        load_image(_short_strip_tiff())
    deflate = bytearray(_tiff(_ramp8(), compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(deflate))) as tif:
        start = tif.pages[0].dataoffsets[0]
    deflate[start: start + 8] = b"\x12" * 8  # not a zlib stream any more
    with pytest.raises(InvalidImageError, match="TIFF decoder failed"):
        load_image(bytes(deflate))


def _short_strip_tiff() -> bytes:
    """A TIFF whose strip byte count points past the end of the file (IFD intact)."""
    data = bytearray(_crafted_tiff(4, 3, bytes(12)))
    # StripByteCounts (279) value: find its entry and make it huge
    pos = data.index(struct.pack("<HHI", 279, 4, 1))
    struct.pack_into("<I", data, pos + 8, 10**6)
    return bytes(data)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sample_format": 3, "bits": 32}, "floating-point"),
        ({"sample_format": 2, "bits": 16}, "signed integer"),
        ({"bits": 32}, "32-bit samples"),
        ({"photometric": 5, "samples": 4}, "colour model 5"),
    ],
)
def test_tiff_unsupported_sample_types_refused(kw, match):
    with pytest.raises(InvalidImageError, match=match):
        load_image(_crafted_tiff(4, 3, bytes(4 * 3 * 4 * 4), **kw))


def test_zero_dimensions_refused():
    with pytest.raises(InvalidImageError, match=r"declares an image of 0 x 10 px"):
        load_image(_crafted_png(0, 10))
    with pytest.raises(InvalidImageError, match=r"10 x 0 px"):
        load_image(_patch_sof(_cv2(".jpg", _ramp8()), 10, 0))
    with pytest.raises(InvalidImageError, match=r"0 x 3 px"):
        load_image(_crafted_tiff(0, 3, bytes(12)))
    bmp = bytearray(_cv2(".bmp", _ramp8()))
    struct.pack_into("<i", bmp, 18, -5)
    with pytest.raises(InvalidImageError, match=r"-5 x 40 px"):
        load_image(bytes(bmp))


def test_malformed_headers_refused():
    sig = aio._PNG_SIGNATURE
    with pytest.raises(InvalidImageError, match="not a valid IHDR"):
        read_header(sig + _png_chunk(b"tEXt", b"x" * 13) + b"\x00" * 8, "png")
    with pytest.raises(InvalidImageError, match="does not exist"):
        read_header(_crafted_png(4, 4, depth=16, colour=3), "png")
    with pytest.raises(InvalidImageError, match="PNG header is incomplete"):
        read_header(sig + b"\x00\x00", "png")
    with pytest.raises(InvalidImageError, match="no PNG signature"):
        read_header(_cv2(".jpg", _ramp8()), "png")  # fmt and bytes disagree
    with pytest.raises(InvalidImageError, match="no JPEG start-of-image"):
        read_header(sig, "jpeg")
    sos_first = b"\xff\xd8" + _jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x12\x34\xff\xd9"
    with pytest.raises(InvalidImageError, match="no JPEG frame header"):
        read_header(sos_first, "jpeg")
    with pytest.raises(InvalidImageError, match="frame header is too short"):
        read_header(b"\xff\xd8" + _jpeg_segment(0xC0, b"\x08\x00"), "jpeg")
    with pytest.raises(InvalidImageError, match="runs past the end"):
        read_header(b"\xff\xd8\xff\xe0\x40\x00JFIF", "jpeg")
    with pytest.raises(InvalidImageError, match="no JPEG marker"):
        read_header(b"\xff\xd8\x12\x34", "jpeg")
    with pytest.raises(InvalidImageError, match="unexpected JPEG marker"):
        read_header(b"\xff\xd8\xff\xd8", "jpeg")
    with pytest.raises(InvalidImageError, match="JPEG frame declares"):
        read_header(b"\xff\xd8" + _jpeg_segment(0xC0, struct.pack(">BHHB", 8, 5, 5, 2)), "jpeg")
    with pytest.raises(InvalidImageError, match="BMP header"):
        read_header(b"BM" + b"\x00" * 12 + struct.pack("<I", 40) + b"\x00" * 8, "bmp")
    with pytest.raises(ValueError, match="fmt must be one of"):
        read_header(sig, "gif")


def test_tiff_tag_errors():
    data = bytearray(_crafted_tiff(4, 3, bytes(12)))
    pos = data.index(struct.pack("<HHI", 256, 4, 1))
    struct.pack_into("<H", data, pos + 2, 5)  # RATIONAL width: not a valid type
    with pytest.raises(InvalidImageError, match="TIFF tag 256 has type 5"):
        read_header(bytes(data), "tiff")
    struct.pack_into("<HHI", data, pos, 256, 4, 3)  # 3 LONGs do not fit the entry: stored at an offset
    struct.pack_into("<I", data, pos + 8, 10**6)  # ... which lies outside the file
    with pytest.raises(InvalidImageError, match="points outside the file"):
        read_header(bytes(data), "tiff")
    data = bytearray(_crafted_tiff(4, 3, bytes(12)))
    pos = data.index(struct.pack("<HHI", 257, 4, 1))
    struct.pack_into("<H", data, pos, 300)  # no ImageLength tag any more
    with pytest.raises(InvalidImageError, match="no image width or length"):
        read_header(bytes(data), "tiff")


def test_bmp_errors():
    bmp = bytearray(_cv2(".bmp", _colour8()))
    struct.pack_into("<H", bmp, 28, 7)
    with pytest.raises(InvalidImageError, match="7 bits per pixel"):
        load_image(bytes(bmp))
    bmp = bytearray(_cv2(".bmp", _colour8()))
    struct.pack_into("<I", bmp, 30, 4)
    with pytest.raises(InvalidImageError, match="embedded JPEG/PNG"):
        load_image(bytes(bmp))
    struct.pack_into("<I", bmp, 30, 11)
    with pytest.raises(InvalidImageError, match="BMP compression 11"):
        load_image(bytes(bmp))
    bmp = bytearray(_cv2(".bmp", _colour8()))
    struct.pack_into("<I", bmp, 10, 10**7)
    with pytest.raises(InvalidImageError, match="pixel data lies outside"):
        load_image(bytes(bmp))
    grey = _cv2(".bmp", _ramp8())
    with pytest.raises(InvalidImageError, match="colour table is cut off"):
        load_image(grey[:200])


def test_decoder_failures_are_wrapped(monkeypatch):
    data = _cv2(".png", _ramp8())

    def wrong_shape(buf, flags):
        return np.zeros((3, 3), np.uint8)

    monkeypatch.setattr(aio.cv2, "imdecode", wrong_shape)
    with pytest.raises(InvalidImageError, match="header declares 50 x 40 px"):
        load_image(data)

    def float_pixels(buf, flags):
        return np.zeros((40, 50), np.float32)

    monkeypatch.setattr(aio.cv2, "imdecode", float_pixels)
    with pytest.raises(InvalidImageError, match="float32 are not supported"):
        load_image(data)

    def raises(buf, flags):
        raise cv2.error("boom")

    monkeypatch.setattr(aio.cv2, "imdecode", raises)
    with pytest.raises(InvalidImageError, match="decoder failed") as e:
        load_image(data)
    assert isinstance(e.value.__cause__, cv2.error)


def test_segment_and_chunk_caps(monkeypatch):
    monkeypatch.setattr(aio, "_MAX_PNG_CHUNKS", 2)
    with pytest.raises(InvalidImageError, match="more than 2 PNG chunks"):
        load_image(_cv2(".png", _ramp8()))
    monkeypatch.setattr(aio, "_MAX_JPEG_SEGMENTS", 2)
    with pytest.raises(InvalidImageError, match="more than 2 JPEG segments"):
        load_image(_cv2(".jpg", _ramp8()))


# ------------------------------------------------------------------------------------------------------------ files
def test_load_image_file(tmp_path):
    a = _ramp8()
    path = tmp_path / "sample.tif"
    path.write_bytes(_tiff(a))
    image, meta = load_image_file(path)
    np.testing.assert_allclose(image, a / 255.0, atol=1e-6)
    with pytest.raises(ImageTooLargeError, match="sample.tif is .* MB; the limit"):
        load_image_file(path, max_bytes=100)
    with pytest.raises(ImageTooLargeError, match="sample.tif: image is 50 x 40 px"):
        load_image_file(str(path), max_pixels=100)
    with pytest.raises(InvalidImageError, match="cannot read .*missing.png"):
        load_image_file(tmp_path / "missing.png")
    with pytest.raises(InvalidImageError, match="is not a regular file"):
        load_image_file(tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UnsupportedFormatError, match="notes.png is not a PNG"):
        load_image_file(tmp_path / "notes.png")


def test_load_image_does_not_mutate_and_accepts_bytearray():
    data = _cv2(".png", _ramp8())
    buf = bytearray(data)
    image, _ = load_image(buf)
    assert bytes(buf) == data and image.shape == (40, 50)


# ------------------------------------------------------------------------------------------------- display helpers
def test_to_uint8():
    f = np.array([[0.0, 0.5, 1.0], [-0.2, 1.3, np.nan]], np.float32)
    before = f.copy()
    np.testing.assert_array_equal(to_uint8(f), [[0, 128, 255], [0, 255, 0]])
    np.testing.assert_array_equal(f, before)  # input untouched
    assert to_uint8(f).dtype == np.uint8
    u = np.array([1, 2, 3], np.uint8)
    out = to_uint8(u)
    np.testing.assert_array_equal(out, u)
    assert out is not u
    np.testing.assert_array_equal(to_uint8(np.array([True, False])), [255, 0])
    with pytest.raises(TypeError, match="float image"):
        to_uint8(np.array([1, 2], np.int32))


def test_encode_png_round_trip():
    grey = _ramp8()
    data = encode_png(grey)
    assert data.startswith(aio._PNG_SIGNATURE)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), grey)
    bgr = _colour8()
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(encode_png(bgr), np.uint8), cv2.IMREAD_UNCHANGED), bgr)
    image, meta = load_image(encode_png(grey / 255.0))  # float goes through to_uint8
    np.testing.assert_allclose(image, grey / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="got int32"):
        encode_png(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="got shape"):
        encode_png(np.zeros((4, 4, 2), np.uint8))
