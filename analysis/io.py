"""Safe loading of micrographs from untrusted bytes (uploads, files on disk).

Order of checks, each before any pixel is decoded:
1. byte cap (``max_bytes``), 2. format from the magic bytes (the file name is only used in messages),
3. declared width/height/bit depth/channels/pages from the header (:func:`read_header`), 4. pixel cap
(``max_pixels``), 5. support checks (sample type, compression) and completeness (JPEG end-of-image marker, PNG IEND
chunk, BMP pixel array, TIFF strips/tiles inside the file). Only then the pixels are decoded (OpenCV for PNG/JPEG/BMP,
tifffile for TIFF, OpenCV's libtiff for TIFF compressions tifffile cannot read without ``imagecodecs``), and the decoded
size must equal the declared size.

Output: float32 (H, W) in [0, 1]. Integer samples are divided by their full scale (255 for 8 bit, 65535 for 16 bit,
2**bits - 1 for other TIFF bit depths, 4095 for 12-bit JPEG); colour becomes luminance (Rec. 601:
0.299 R + 0.587 G + 0.114 B); alpha is dropped; a TIFF stored "min-is-white" is inverted so bright stays bright;
only the first page of a multi-page TIFF is read. EXIF orientation is not applied (pixels as stored).

Raises (all from :mod:`analysis.errors`): :class:`UnsupportedFormatError` (not PNG/JPEG/TIFF/BMP, empty),
:class:`ImageTooLargeError` (byte or pixel cap), :class:`InvalidImageError` (malformed header, truncated or corrupt
data, unsupported sample type).
"""
from __future__ import annotations

import io
import logging
import lzma
import os
import re
import stat
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import tifffile

from analysis.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from analysis.records import ImageMeta

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: int = 50_000_000  # fits 2592x1944 and 40 MP scientific cameras
DEFAULT_MAX_BYTES: int = 200 * 1024 * 1024
SUPPORTED_FORMATS = ("png", "jpeg", "tiff", "bmp")

_PIXEL_SETTING = "image size cap"
_BYTE_SETTING = "file size cap"
_MAX_DIM = 2**31 - 1
_MAX_TIFF_PAGES = 10_000  # page counting stops here
_MAX_PNG_CHUNKS = 2_000_000  # 8 KiB IDAT chunks of a 200 MB file stay far below this
_MAX_JPEG_SEGMENTS = 100_000
_LUMA_RGB = (0.299, 0.587, 0.114)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# JPEG: SOF0..SOF15 carry the frame size, except C4 (DHT), C8 (JPG extension) and CC (DAC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..RST7: no length field
_NOT_FF = re.compile(rb"[^\xff]")
# Inside entropy-coded data 0xFF is followed by 0x00 (stuffing), RSTn, or 0xFF (fill); anything else is a marker.
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")

_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
_TIFF_TAGS = {256: "width", 257: "height", 258: "bits", 259: "compression", 262: "photometric", 277: "samples",
              284: "planar", 339: "sample_format"}
_TIFF_PHOTOMETRIC_OK = {0: "min-is-white", 1: "min-is-black", 2: "RGB", 3: "palette", 6: "YCbCr"}

# Errors third-party decoders raise on malformed input (tifffile raises TiffFileError, a ValueError, among others).
_DECODER_ERRORS = (ValueError, KeyError, IndexError, TypeError, OSError, EOFError, RuntimeError, struct.error,
                   zlib.error, lzma.LZMAError, cv2.error)


# ----------------------------------------------------------------------------------------------------------- messages
def _label(name: str) -> str:
    return name or "the image"


def _corrupt(label: str, why: str) -> InvalidImageError:
    return InvalidImageError(
        f"{label}: file is truncated or corrupt ({why}); copy or export the original image again")


def _num(x: float) -> str:
    """1 decimal without trailing zeros: 2500.0 -> '2500', 2.5 -> '2.5'."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _check_dims(width: int, height: int, label: str) -> None:
    if width <= 0 or height <= 0 or width > _MAX_DIM or height > _MAX_DIM:
        raise _corrupt(label, f"the header declares an image of {width} x {height} px")


# ------------------------------------------------------------------------------------------------------------ sniffing
def _what_else(data: bytes) -> str:
    """A hint for the message when the bytes are not one of our formats."""
    if data.startswith(b"%PDF"):
        return " (it is a PDF document)"
    if data.startswith(b"PK\x03\x04"):
        return " (it is a ZIP archive, e.g. .zip/.docx/.xlsx)"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return " (it is a GIF image)"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return " (it is a WebP image)"
    head = data[:512]
    if head and all(b in b"\t\n\r" or 32 <= b < 127 or b >= 128 for b in head):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return ""
        return " (it looks like text)"
    return ""


def _sniff(data: bytes, label: str) -> str:
    if not data:
        raise UnsupportedFormatError(f"{label} is empty (0 bytes); it is not a PNG, JPEG, TIFF or BMP image")
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    if data[:2] == b"BM" and len(data) >= 18 and struct.unpack_from("<I", data, 14)[0] in _BMP_DIB_SIZES:
        return "bmp"
    raise UnsupportedFormatError(
        f"{label} is not a PNG, JPEG, TIFF or BMP image{_what_else(data)}; save or export the micrograph in one of "
        "these formats")


def sniff_format(data: bytes) -> str:
    """Return 'png', 'jpeg', 'tiff' or 'bmp' from the magic bytes alone (file names are never trusted).

    Raises UnsupportedFormatError for anything else, including empty bytes.
    """
    return _sniff(bytes(data), "the file")


# -------------------------------------------------------------------------------------------------------------- PNG
def _png_header(data: bytes, label: str) -> tuple[ImageMeta, dict]:
    if not data.startswith(_PNG_SIGNATURE):
        raise _corrupt(label, "no PNG signature")
    if len(data) < 33:
        raise _corrupt(label, "PNG header is incomplete")
    length, ctype = struct.unpack_from(">I4s", data, 8)
    if ctype != b"IHDR" or length != 13:
        raise _corrupt(label, "the first PNG chunk is not a valid IHDR header")
    width, height, depth, colour, _comp, _filt, _interlace = struct.unpack_from(">IIBBBBB", data, 16)
    allowed = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
    if depth not in allowed.get(colour, ()):
        raise _corrupt(label, f"PNG colour type {colour} with bit depth {depth} does not exist")
    _check_dims(width, height, label)
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[colour]
    return ImageMeta("png", width, height, depth, channels), {}


def _png_check_complete(data: bytes, label: str) -> None:
    """Walk the chunk list up to IEND (chunk headers only; CRCs are left to libpng)."""
    pos, n = 8, len(data)
    for _ in range(_MAX_PNG_CHUNKS):
        if pos + 12 > n:
            raise _corrupt(label, "the PNG ends before its IEND chunk")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length
        if ctype == b"IEND":
            if pos > n:
                raise _corrupt(label, "the PNG IEND chunk is cut off")
            return
    raise _corrupt(label, f"more than {_MAX_PNG_CHUNKS} PNG chunks")


# ------------------------------------------------------------------------------------------------------------- JPEG
def _jpeg_markers(data: bytes, label: str):
    """Yield (marker, payload_start, payload_end) for each marker after SOI, ending with EOI (0xD9).

    Segments are skipped by their length field; the entropy-coded data after each SOS is skipped to the next marker.
    Raises InvalidImageError when the data ends before EOI or a segment is malformed.
    """
    n, pos = len(data), 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        if pos >= n or data[pos] != 0xFF:
            if pos >= n:
                raise _corrupt(label, "the JPEG ends before its end-of-image marker")
            raise _corrupt(label, f"no JPEG marker at byte {pos}")
        found = _NOT_FF.search(data, pos)  # skip 0xFF fill bytes
        if found is None:
            raise _corrupt(label, "the JPEG ends before its end-of-image marker")
        marker, pos = data[found.start()], found.start() + 1
        if marker == 0xD9:
            yield marker, pos, pos
            return
        if marker in _JPEG_STANDALONE:
            yield marker, pos, pos
            continue
        if marker in (0x00, 0xD8):
            raise _corrupt(label, f"unexpected JPEG marker 0x{marker:02X} at byte {pos - 1}")
        if pos + 2 > n:
            raise _corrupt(label, "the JPEG ends inside a segment header")
        (length,) = struct.unpack_from(">H", data, pos)
        end = pos + length
        if length < 2 or end > n:
            raise _corrupt(label, f"JPEG segment 0x{marker:02X} runs past the end of the file")
        yield marker, pos + 2, end
        pos = end
        if marker == 0xDA:  # start of scan: compressed data follows
            nxt = _JPEG_MARKER_IN_SCAN.search(data, pos)
            if nxt is None:
                raise _corrupt(label, "the JPEG ends inside the image data (no end-of-image marker)")
            pos = nxt.start()
    raise _corrupt(label, f"more than {_MAX_JPEG_SEGMENTS} JPEG segments")


def _jpeg_header(data: bytes, label: str) -> tuple[ImageMeta, dict]:
    if not data.startswith(b"\xff\xd8"):
        raise _corrupt(label, "no JPEG start-of-image marker")
    for marker, start, end in _jpeg_markers(data, label):
        if marker in _JPEG_SOF:
            if end - start < 6:
                raise _corrupt(label, "JPEG frame header is too short")
            precision, height, width, ncomp = struct.unpack_from(">BHHB", data, start)
            if precision not in (8, 12, 16) or ncomp not in (1, 3, 4):
                raise _corrupt(label, f"JPEG frame declares {precision}-bit samples and {ncomp} components")
            _check_dims(width, height, label)
            return ImageMeta("jpeg", width, height, precision, ncomp), {"sof": marker}
        if marker in (0xDA, 0xD9):
            break
    raise _corrupt(label, "no JPEG frame header before the image data")


def _jpeg_check_complete(data: bytes, label: str) -> None:
    for _marker in _jpeg_markers(data, label):  # raises unless the walk reaches EOI
        pass


# ------------------------------------------------------------------------------------------------------------- TIFF
def _tiff_header(data: bytes, label: str) -> tuple[ImageMeta, dict]:
    n = len(data)
    if n < 8 or data[:4] not in _TIFF_MAGICS:
        raise _corrupt(label, "TIFF header is incomplete")
    bo = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        if n < 16:
            raise _corrupt(label, "BigTIFF header is incomplete")
        offsize, reserved, ifd = struct.unpack_from(bo + "HHQ", data, 4)
        if offsize != 8 or reserved != 0:
            raise _corrupt(label, "BigTIFF header is malformed")
        count_fmt, entry_fmt, off_fmt = bo + "Q", bo + "HHQ8s", bo + "Q"
    else:
        (ifd,) = struct.unpack_from(bo + "I", data, 4)
        count_fmt, entry_fmt, off_fmt = bo + "H", bo + "HHI4s", bo + "I"
    count_size, entry_size, off_size = (struct.calcsize(f) for f in (count_fmt, entry_fmt, off_fmt))

    def ifd_bounds(offset: int) -> tuple[int, int] | None:
        """(entries start, next-offset position) of the IFD at offset, or None if it does not fit in the file."""
        if offset < 8 or offset + count_size > n:
            return None
        (count,) = struct.unpack_from(count_fmt, data, offset)
        next_pos = offset + count_size + count * entry_size
        return None if next_pos + off_size > n else (offset + count_size, next_pos)

    bounds = ifd_bounds(ifd)
    if bounds is None:
        raise _corrupt(label, "the first TIFF directory lies outside the file")
    tags: dict[str, tuple[int, ...]] = {}
    for tag, typ, count, raw in struct.iter_unpack(entry_fmt, data[bounds[0]:bounds[1]]):
        key = _TIFF_TAGS.get(tag)
        if key is None:
            continue
        fmt = _TIFF_TYPES.get(typ)
        if fmt is None or count == 0:
            raise _corrupt(label, f"TIFF tag {tag} has type {typ} and {count} values")
        want, size = min(count, 16), struct.calcsize(fmt)
        if count * size <= off_size:
            tags[key] = struct.unpack_from(f"{bo}{want}{fmt}", raw, 0)
        else:
            (pos,) = struct.unpack_from(off_fmt, raw, 0)
            if pos + want * size > n:
                raise _corrupt(label, f"TIFF tag {tag} points outside the file")
            tags[key] = struct.unpack_from(f"{bo}{want}{fmt}", data, pos)
    if "width" not in tags or "height" not in tags:
        raise _corrupt(label, "the TIFF directory has no image width or length")
    width, height = tags["width"][0], tags["height"][0]
    _check_dims(width, height, label)
    samples = tags.get("samples", (1,))[0]
    bits = tags.get("bits", (1,))
    if samples < 1 or any(b != bits[0] for b in bits):
        raise _corrupt(label, f"TIFF declares {samples} samples of {bits} bits")
    info = {
        "bits": bits[0],
        "samples": samples,
        "compression": tags.get("compression", (1,))[0],
        "photometric": tags.get("photometric", (2 if samples >= 3 else 1,))[0],
        "planar": tags.get("planar", (1,))[0],
        "sample_format": tags.get("sample_format", (1,))[0],
    }

    pages, seen = 1, {ifd}
    (nxt,) = struct.unpack_from(off_fmt, data, bounds[1])
    while nxt and pages < _MAX_TIFF_PAGES:
        b = ifd_bounds(nxt)
        if nxt in seen or b is None:
            logger.warning("%s: TIFF page list is damaged after page %d; counting stops there", label, pages)
            break
        seen.add(nxt)
        pages += 1
        (nxt,) = struct.unpack_from(off_fmt, data, b[1])
    meta = ImageMeta("tiff", width, height, info["bits"], samples, n_pages=pages)
    return meta, info


def _tiff_check_supported(info: dict, label: str) -> None:
    if info["sample_format"] != 1:
        kind = {2: "signed integer", 3: "floating-point"}.get(info["sample_format"], "non-integer")
        raise InvalidImageError(
            f"{label}: TIFF with {kind} samples is not supported; save it as 8- or 16-bit unsigned grey or RGB")
    if not 1 <= info["bits"] <= 16:
        raise InvalidImageError(
            f"{label}: TIFF with {info['bits']}-bit samples is not supported; save it as 8 or 16 bit")
    if info["photometric"] not in _TIFF_PHOTOMETRIC_OK:
        raise InvalidImageError(
            f"{label}: TIFF colour model {info['photometric']} (e.g. CMYK, Lab) is not supported; save as grey or RGB")


# -------------------------------------------------------------------------------------------------------------- BMP
def _bmp_header(data: bytes, label: str) -> tuple[ImageMeta, dict]:
    if len(data) < 30 or data[:2] != b"BM":
        raise _corrupt(label, "BMP header is incomplete")
    pixel_offset, dib = struct.unpack_from("<II", data, 10)
    if dib not in _BMP_DIB_SIZES or len(data) < 14 + dib:
        raise _corrupt(label, f"BMP header of {dib} bytes is unknown or cut off")
    if dib == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height, _planes, bpp = struct.unpack_from("<HHHH", data, 18)
        compression, colours_used = 0, 0
    else:
        width, height, _planes, bpp = struct.unpack_from("<iiHH", data, 18)
        compression = struct.unpack_from("<I", data, 30)[0] if dib >= 20 else 0
        colours_used = struct.unpack_from("<I", data, 46)[0] if dib >= 40 else 0
    top_down = height < 0
    height = abs(height)
    _check_dims(width, height, label)
    if bpp not in (1, 2, 4, 8, 16, 24, 32):
        raise _corrupt(label, f"BMP declares {bpp} bits per pixel")
    channels, depth = {16: (3, 5), 24: (3, 8), 32: (4, 8)}.get(bpp, (3, bpp))
    if bpp <= 8:  # palette image: grey if every palette entry has B == G == R
        entry = 3 if dib == 12 else 4
        start = 14 + dib + (12 if dib == 40 and compression == 3 else 16 if dib == 40 and compression == 6 else 0)
        count = min(colours_used or 2**bpp, 2**bpp)
        if start + count * entry > len(data):
            raise _corrupt(label, "the BMP colour table is cut off")
        table = np.frombuffer(data, np.uint8, count * entry, start).reshape(count, entry)
        channels = 1 if (np.all(table[:, 0] == table[:, 1]) and np.all(table[:, 1] == table[:, 2])) else 3
    info = {"bpp": bpp, "compression": compression, "pixel_offset": pixel_offset, "top_down": top_down, "dib": dib}
    return ImageMeta("bmp", width, height, depth, channels), info


def _bmp_check(data: bytes, meta: ImageMeta, info: dict, label: str) -> None:
    if info["compression"] in (4, 5):
        raise InvalidImageError(f"{label}: BMP with an embedded JPEG/PNG is not supported; save it as PNG or TIFF")
    if info["compression"] not in (0, 1, 2, 3, 6):
        raise InvalidImageError(f"{label}: BMP compression {info['compression']} is not supported; save as PNG")
    if not 14 + info["dib"] <= info["pixel_offset"] <= len(data):
        raise _corrupt(label, "the BMP pixel data lies outside the file")
    if info["compression"] in (0, 3, 6):  # uncompressed rows, padded to 4 bytes
        stride = (meta.width * info["bpp"] + 31) // 32 * 4
        if info["pixel_offset"] + stride * meta.height > len(data):
            raise _corrupt(label, "the BMP pixel data is cut off")


# ---------------------------------------------------------------------------------------------------------- headers
_HEADERS = {"png": _png_header, "jpeg": _jpeg_header, "tiff": _tiff_header, "bmp": _bmp_header}


def read_header(data: bytes, fmt: str) -> ImageMeta:
    """Declared width, height, bit depth, channels and page count, parsed without decoding any pixel.

    data: the whole file (only the header and, for TIFF, the directory chain are read).
    fmt: one of SUPPORTED_FORMATS (usually from :func:`sniff_format`).
    Raises InvalidImageError on a malformed header (including zero size); ValueError for an unknown ``fmt``.
    """
    if fmt not in _HEADERS:
        raise ValueError(f"fmt must be one of {SUPPORTED_FORMATS}, not {fmt!r}")
    return _HEADERS[fmt](bytes(data), "the image")[0]


# --------------------------------------------------------------------------------------------------------- decoding
def _decode_cv2(data: bytes, label: str) -> np.ndarray:
    """OpenCV decode, unchanged depth and channels (colour in BGR(A) order)."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise _corrupt(label, "the decoder failed") from e
    if image is None:
        raise _corrupt(label, "the decoder could not read the pixel data")
    return image


def _decode_tiff(data: bytes, info: dict, label: str) -> tuple[np.ndarray, np.ndarray | None]:
    """First page as stored (H, W) or (H, W, S), RGB order, plus the palette (3, N) uint16 for palette images."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            offsets, counts = page.dataoffsets, page.databytecounts
            inside = bool(offsets) and max(o + c for o, c in zip(offsets, counts)) <= len(data)
            image = page.asarray() if inside else None
            colormap = page.colormap if info["photometric"] == 3 else None
    except _DECODER_ERRORS as e:
        raise _corrupt(label, "the TIFF decoder failed") from e
    if image is None:
        raise _corrupt(label, "TIFF pixel data lies outside the file")
    if info["planar"] == 2 and image.ndim == 3:
        image = np.moveaxis(image, 0, -1)
    return image, colormap


def _grey(image: np.ndarray, *, scale: float, order: str) -> np.ndarray:
    """float32 (H, W) in [0, 1] from (H, W) or (H, W, C) integer/bool samples; colour order 'bgr' or 'rgb'."""
    k = 1.0 / scale
    if image.ndim == 2 or image.shape[2] < 3:
        plane = image if image.ndim == 2 else image[:, :, 0]
        out = plane.astype(np.float32)
        out *= k
    else:
        r, g, b = (2, 1, 0) if order == "bgr" else (0, 1, 2)
        out = image[:, :, r].astype(np.float32) * np.float32(_LUMA_RGB[0] * k)
        out += image[:, :, g].astype(np.float32) * np.float32(_LUMA_RGB[1] * k)
        out += image[:, :, b].astype(np.float32) * np.float32(_LUMA_RGB[2] * k)
    return np.clip(out, 0.0, 1.0, out=out)


def _int_scale(image: np.ndarray, bits: int, label: str) -> float:
    if image.dtype == np.bool_:
        return 1.0
    if image.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(
            f"{label}: decoded samples of type {image.dtype} are not supported; save as 8 or 16 bit")
    return float(2**bits - 1) if 1 <= bits <= np.iinfo(image.dtype).bits else float(np.iinfo(image.dtype).max)


def _decode(data: bytes, meta: ImageMeta, info: dict, label: str) -> tuple[np.ndarray, list[str]]:
    notes: list[str] = []
    via_tifffile = (meta.format == "tiff" and info["compression"] in tifffile.TIFF.DECOMPRESSORS
                    and info["photometric"] != 6)
    if via_tifffile:
        image, colormap = _decode_tiff(data, info, label)
        if colormap is not None:  # palette: look the indices up, then treat as 16-bit RGB
            image = np.moveaxis(colormap[:, np.minimum(image, colormap.shape[1] - 1)], 0, -1)
            scale = 65535.0
        else:
            scale = _int_scale(image, info["bits"], label)
        order = "rgb"
    else:  # PNG, JPEG, BMP; TIFF compressions tifffile cannot read without imagecodecs (LZW, JPEG, ...)
        image = _decode_cv2(data, label)
        bits = meta.bit_depth if meta.format == "jpeg" else 0  # 12-bit JPEG arrives as uint16 0..4095
        scale, order = _int_scale(image, bits, label), "bgr"
    if image.ndim not in (2, 3) or image.shape[:2] != (meta.height, meta.width):
        raise _corrupt(label, f"decoded array of shape {image.shape} but the header declares "
                              f"{meta.width} x {meta.height} px")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if via_tifffile and info["photometric"] in (0, 1) and channels > 1:  # grey plus extra samples
        image, channels = image[:, :, 0], 2
    if channels >= 3:
        notes.append("colour converted to grey (luminance 0.299 R + 0.587 G + 0.114 B)")
    if channels in (2, 4):
        notes.append("alpha (transparency) channel ignored")
    out = _grey(image, scale=scale, order=order)
    if via_tifffile and info["photometric"] == 0:  # min-is-white: tifffile returns samples as stored
        out = np.subtract(1.0, out, dtype=np.float32)
        notes.append("TIFF stored as min-is-white; inverted so that white is 1")
    return out, notes


# ------------------------------------------------------------------------------------------------------- public API
def _check_bytes(size: int, max_bytes: int, label: str) -> None:
    if size > max_bytes:
        raise ImageTooLargeError(
            f"{label} is {_num(size / 2**20)} MB; the limit is {_num(max_bytes / 2**20)} MB "
            f"(setting '{_BYTE_SETTING}')")


def load_image(data: bytes, *, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, ImageMeta]:
    """Decode an untrusted image file held in memory.

    data: the file's bytes (PNG, JPEG, TIFF or BMP; recognised by magic bytes, never by ``name``).
    name: used in messages only (e.g. the upload's file name).
    Returns (image float32 (H, W) in [0, 1], ImageMeta of the source; meta.notes says what was converted/skipped).
    Raises UnsupportedFormatError, ImageTooLargeError (checked from the header, before any pixel is decoded),
    InvalidImageError (malformed, truncated or corrupt file; unsupported sample type).
    """
    label = _label(name)
    if not isinstance(data, bytes):
        data = bytes(data)
    _check_bytes(len(data), max_bytes, label)
    fmt = _sniff(data, label)
    meta, info = _HEADERS[fmt](data, label)
    pixels = meta.width * meta.height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"{label}: image is {meta.width} x {meta.height} px = {_num(pixels / 1e6)} MP; the limit is "
            f"{_num(max_pixels / 1e6)} MP (setting '{_PIXEL_SETTING}')")
    if fmt == "png":
        _png_check_complete(data, label)
    elif fmt == "jpeg":
        _jpeg_check_complete(data, label)
    elif fmt == "bmp":
        _bmp_check(data, meta, info, label)
    else:
        _tiff_check_supported(info, label)
    image, notes = _decode(data, meta, info, label)
    if meta.n_pages > 1:
        notes.insert(0, f"{meta.n_pages} pages; only the first was analysed")
    meta = replace(meta, notes=meta.notes + tuple(notes))
    logger.debug("%s: loaded %s %d x %d px, %d bit, %d channel(s)", label, fmt, meta.width, meta.height,
                 meta.bit_depth, meta.channels)
    return image, meta


def load_image_file(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, ImageMeta]:
    """:func:`load_image` for a file on disk; the file size is checked with stat() before anything is read.

    Raises InvalidImageError (naming the file) when it cannot be read, plus everything load_image raises.
    """
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImageError(f"{p} is not a regular file")
        _check_bytes(st.st_size, max_bytes, str(p))
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)  # + 1: a file that grew since stat() still trips the cap
    except OSError as e:
        raise InvalidImageError(f"cannot read {p}: {e.strerror or e}") from e
    return load_image(data, name=str(p), max_pixels=max_pixels, max_bytes=max_bytes)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float image in [0, 1] (any shape) -> uint8 0..255, rounded; values outside [0, 1] are clipped, NaN -> 0.

    uint8 input is returned as a copy, bool as 0/255. Raises TypeError for other dtypes.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.copy()
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"to_uint8 expects a float image in [0, 1], got {a.dtype}")
    out = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(out, 0.0, 1.0, out=out)
    return np.rint(out * 255.0).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a grey (H, W) or colour (H, W, 3|4) image via cv2.imencode.

    Colour arrays are taken in OpenCV's BGR(A) order (pass ``rgb[..., ::-1]`` for RGB). uint8 and uint16 are written
    as they are; float/bool images go through :func:`to_uint8` first. Raises ValueError for other shapes/dtypes.
    """
    a = np.asarray(image)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.floating):
        a = to_uint8(a)
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png expects uint8/uint16 or float pixels, got {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))) or a.size == 0:
        raise ValueError(f"encode_png expects (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    try:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(a))
    except cv2.error as e:
        raise ValueError(f"PNG encoding failed for an image of shape {a.shape}") from e
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {a.shape}")
    return buf.tobytes()
