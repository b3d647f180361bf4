"""Image file headers: the format and declared size of a PNG, JPEG, GIF or BMP file, cheaply.

`read_header(file)` reads a file's first bytes (and its last few) without decoding it:
its format, the width and height its header declares, a `problem` when the file cannot
be an image a decoder reads (empty, another format, a zero or absurd declared size: more
than `MAX_IMAGE_PIXELS`), and an `unusual` reason when the header alone does not show
that the file is whole (a JPEG without its end marker, as a truncated file is; a PNG
without IEND; a GIF without its trailer; an uncommon sub-format), so that a caller
decodes that file to find out. Pure Python (no TensorFlow): about 20 microseconds for
a small JPEG.

Example:

>>> import struct, zlib
>>> def chunk(kind, data):
...     return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
>>> png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
...        + chunk(b"IEND", b""))
>>> with open("huge.png", "wb") as file:
...     _ = file.write(png)
>>> header = read_header("huge.png")
>>> header.format, header.width, header.height
('png', 30000, 30000)
>>> header.problem
'it declares 30000x30000 pixels, more than the 100000000 an image may have'
"""

import os
import struct
from typing import NamedTuple

# A larger declared size is refused: decoding it would take gigabytes (30000x30000 RGB
# is 2.7 GB; TensorFlow's PNG decoder refuses it only when it meets the file).
MAX_IMAGE_PIXELS = 100_000_000
HEAD_BYTES = 65536  # read at once; a JPEG's frame header further in is found by seeking
TAIL_BYTES = 16
_MAX_JPEG_SEGMENTS = 10_000
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# PNG colour type: the bit depths it allows.
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# JPEG frame headers (SOF0 .. SOF15 less DHT, JPG and DAC); the common ones: baseline,
# extended and progressive Huffman.
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_COMMON_SOF = frozenset((0xC0, 0xC1, 0xC2))
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RST0..7: no length


class ImageHeader(NamedTuple):
    """What a file's header says, undecoded.

    Attributes:
        format: "png", "jpeg", "gif" or "bmp"; None when the file starts like none.
        width, height: the declared size in pixels (0 when not read).
        problem: why no decoder can read the file as an image (None: no such reason).
        unusual: why only a full decode can tell whether the file is whole (None: the
            header and the end of the file look like a complete, common image).

    Example:

    >>> ImageHeader("jpeg", 32, 32, None, None).problem is None
    True
    """

    format: str
    width: int
    height: int
    problem: str
    unusual: str


def read_header(file, open_file=open):
    """The `ImageHeader` of the image file `file`, from its first and last bytes.

    `open_file(file, "rb")` opens it (e.g. `tf.io.gfile.GFile` for a remote path): a
    binary file object with `read`, `seek` and `tell`.

    Raises:
        OSError: the file cannot be opened or read.

    Example:

    >>> with open("tiny.gif", "wb") as f:
    ...     _ = f.write(b"GIF89a" + struct.pack("<HH", 3, 2) + b"\\x00\\x00\\x00;")
    >>> read_header("tiny.gif")
    ImageHeader(format='gif', width=3, height=2, problem=None, unusual=None)
    """
    with open_file(file, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(0)
        head = handle.read(HEAD_BYTES)
        if not head:
            return ImageHeader(None, 0, 0, "it is empty", None)
        if size > len(head):
            handle.seek(max(size - TAIL_BYTES, 0))
            tail = handle.read(TAIL_BYTES)
        else:
            tail = head[-TAIL_BYTES:]
        if head.startswith(_PNG):
            header = _png(head, tail)
        elif head.startswith(b"\xff\xd8\xff"):
            header = _jpeg(handle, head, tail, size)
        elif head.startswith((b"GIF87a", b"GIF89a")):
            header = _gif(head, tail)
        elif head.startswith(b"BM"):
            header = _bmp(head, size)
        else:
            return ImageHeader(None, 0, 0, "not a PNG, JPEG, GIF or BMP file", None)
    if header.problem is None:
        if header.width * header.height > MAX_IMAGE_PIXELS:
            return header._replace(
                problem=f"it declares {header.width}x{header.height} pixels, more than the "
                f"{MAX_IMAGE_PIXELS} an image may have",
            )
        if header.width <= 0 or header.height <= 0:
            return header._replace(problem=f"it declares a {header.width}x{header.height} image")
    return header


def _png(head, tail):
    if len(head) < 33 or head[8:16] != b"\x00\x00\x00\x0dIHDR":
        return ImageHeader("png", 0, 0, "a PNG that ends before or lacks its IHDR header", None)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    unusual = None
    if depth not in _PNG_DEPTHS.get(colour, ()) or interlace > 1:
        unusual = f"a PNG of colour type {colour}, bit depth {depth}, interlace {interlace}"
    elif not tail.endswith(_PNG_IEND):
        unusual = "a PNG without its IEND end chunk, as a truncated file is"
    return ImageHeader("png", width, height, None, unusual)


def _jpeg(handle, head, tail, size):
    """The frame header (SOFn) found by walking the segments from the start."""

    def read(offset, count):
        if offset + count <= len(head):
            return head[offset:offset + count]
        handle.seek(offset)
        return handle.read(count)

    offset = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        marker = read(offset, 4)
        if len(marker) < 2:
            break
        if marker[0] != 0xFF:
            return ImageHeader("jpeg", 0, 0, "a damaged JPEG: no marker where one belongs", None)
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            offset += 1
            continue
        if kind in _JPEG_STANDALONE:
            offset += 2
            continue
        if kind in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            return ImageHeader("jpeg", 0, 0, "a JPEG without a frame header", None)
        if len(marker) < 4:
            break
        if kind in _JPEG_SOF:
            frame = read(offset + 4, 6)
            if len(frame) < 6:
                break
            precision, height, width, components = struct.unpack(">BHHB", frame)
            unusual = None
            if kind not in _JPEG_COMMON_SOF or precision != 8 or components not in (1, 3):
                unusual = (
                    f"a JPEG of frame type 0x{kind:X}, {precision} bits, {components} components"
                )
            elif not tail.rstrip(b"\x00").endswith(b"\xff\xd9"):
                unusual = "a JPEG without its end marker, as a truncated file is"
            if height == 0:  # the height comes later, in a DNL segment
                return ImageHeader("jpeg", width, 1, None, "a JPEG that declares its height late")
            return ImageHeader("jpeg", width, height, None, unusual)
        offset += 2 + (marker[2] << 8 | marker[3])
        if offset >= size:
            break
    else:
        return ImageHeader("jpeg", 0, 0, None, "a JPEG of very many segments")
    return ImageHeader("jpeg", 0, 0, "a JPEG that ends before its frame header, as a truncated file does", None)


def _gif(head, tail):
    if len(head) < 13:
        return ImageHeader("gif", 0, 0, "a GIF that ends before its screen descriptor", None)
    width, height = struct.unpack("<HH", head[6:10])
    unusual = None if tail.endswith(b";") else "a GIF without its trailer, as a truncated file is"
    return ImageHeader("gif", width, height, None, unusual)


def _bmp(head, size):
    if len(head) < 26:
        return ImageHeader("bmp", 0, 0, "a BMP that ends before its header", None)
    offset, dib = struct.unpack("<II", head[10:18])
    if dib == 12:  # BITMAPCOREHEADER
        width, height, _, bits = struct.unpack("<HHHH", head[18:26])
        return ImageHeader("bmp", width, height, None, f"an OS/2 BMP of {bits} bits")
    if len(head) < 34 or dib < 40:
        return ImageHeader("bmp", 0, 0, f"a BMP with an unknown header of {dib} bytes", None)
    width, height, _, bits, compression = struct.unpack("<iiHHI", head[18:34])
    height = abs(height)  # negative: stored top-down
    unusual = None
    if bits not in (24, 32) or compression not in (0, 3):
        unusual = f"a BMP of {bits} bits, compression {compression}"
    elif size < offset + (width * bits + 31) // 32 * 4 * height:
        unusual = "a BMP shorter than its pixels, as a truncated file is"
    return ImageHeader("bmp", width, height, None, unusual)
