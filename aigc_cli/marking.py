"""The machine-readable "made by AI" mark: the IPTC digital source type in XMP, and its audio forms.

Images (PNG, JPEG, WebP) and WAV carry an XMP packet with `Iptc4xmpExt:DigitalSourceType` and
`xmp:CreatorTool` (PNG: an iTXt chunk `XML:com.adobe.xmp`; JPEG and WebP: their XMP segment or chunk, written
by Pillow; WAV: a RIFF `_PMX` chunk, where Adobe's XMP specification puts it). FLAC, Ogg Vorbis and Ogg Opus
carry two Vorbis comments instead, `DIGITAL_SOURCE_TYPE` (the same IPTC URL) and `CREATOR_TOOL`; MP3 the same
two as ID3 TXXX (user-defined text) frames. AAC carries no mark (ADTS has no tags at all).

Nothing here imports a heavy library: the audio writers edit the container's bytes.
"""

from __future__ import annotations

import struct
from typing import Any
from xml.sax.saxutils import quoteattr

IPTC_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
MADE = "trainedAlgorithmicMedia"
"""Made by a trained model from a prompt (text-to-image, speech)."""
COMPOSITE = "compositeWithTrainedAlgorithmicMedia"
"""A user's image changed by a trained model (image-to-image, inpainting)."""
XMP_KEYWORD = "XML:com.adobe.xmp"
"""The PNG iTXt keyword of an XMP packet."""
VORBIS_TAG = "DIGITAL_SOURCE_TYPE"
VORBIS_TOOL = "CREATOR_TOOL"
MARKED_AUDIO = ("wav", "flac", "ogg", "opus", "mp3")
"""The audio formats that carry the mark."""


def source_type_url(kind: str) -> str:
    """The IPTC digital source type URL of a record's `digital_source_type` (MADE or COMPOSITE)."""
    return IPTC_TYPES + kind


def xmp_packet(kind: str, tool: str) -> bytes:
    """An XMP packet (UTF-8) that says the file is `kind` (MADE or COMPOSITE) and was made by `tool`."""
    text = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        f"    Iptc4xmpExt:DigitalSourceType={quoteattr(source_type_url(kind))}\n"
        f"    xmp:CreatorTool={quoteattr(tool)}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )
    return text.encode("utf-8")


def creator_tool(record: dict[str, Any]) -> str:
    """`aigc VERSION`, as xmp:CreatorTool names the tool."""
    return f"aigc {record.get('aigc_version', '')}".strip()


def mark_audio(data: bytes, fmt: str, record: dict[str, Any]) -> bytes:
    """The encoded audio file `data` (format `fmt`) with the mark its container takes (see the module's
    docstring); unchanged for a record that asks for none (digital_source_type null) and for mp3 and aac."""
    kind = record.get("digital_source_type")
    if not kind or fmt not in MARKED_AUDIO:
        return data
    if fmt == "wav":
        return riff_append(data, b"_PMX", xmp_packet(kind, creator_tool(record)))
    comments = [f"{VORBIS_TAG}={source_type_url(kind)}", f"{VORBIS_TOOL}={creator_tool(record)}"]
    if fmt == "flac":
        return flac_add_comments(data, comments)
    if fmt == "mp3":
        return id3_add_texts(data, dict(c.split("=", 1) for c in comments))
    return ogg_add_comments(data, comments)


# --- WAV ----------------------------------------------------------------------------------------------------


def riff_append(data: bytes, chunk_id: bytes, body: bytes) -> bytes:
    """A RIFF (WAV) file with one chunk more at its end, the RIFF size updated; the body padded to an even
    length as RIFF asks."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF WAVE file")
    chunk = chunk_id + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")
    out = data + chunk
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


def riff_chunks(data: bytes) -> dict[bytes, bytes]:
    """The top-level chunks of a RIFF WAVE file: id -> body (the first of each id)."""
    found: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        found.setdefault(chunk_id, data[offset + 8 : offset + 8 + size])
        offset += 8 + size + (size % 2)
    return found


# --- ID3 (MP3) ----------------------------------------------------------------------------------------------


def _syncsafe(value: bytes) -> int:
    size = 0
    for byte in value:
        size = (size << 7) | (byte & 0x7F)
    return size


def _to_syncsafe(size: int) -> bytes:
    return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _id3_frames(data: bytes) -> tuple[int, int, int]:
    """(major version, where the frames end (padding or the tag's end), the tag's end) of a leading ID3v2.3
    or 2.4 tag without unsynchronisation or an extended header; ValueError otherwise."""
    if data[:3] != b"ID3" or data[3] not in (3, 4) or data[5] & 0xC0:
        raise ValueError("an ID3 tag aigc does not edit")
    end = 10 + _syncsafe(data[6:10])
    offset = 10
    while offset + 10 <= end and data[offset : offset + 4] != b"\x00\x00\x00\x00":
        raw = data[offset + 4 : offset + 8]
        offset += 10 + (_syncsafe(raw) if data[3] == 4 else int.from_bytes(raw, "big"))
    return data[3], min(offset, end), end


def id3_add_texts(data: bytes, texts: dict[str, str]) -> bytes:
    """An MP3 whose leading ID3v2 tag has a TXXX frame more per (description, value); one made when the
    file has no tag."""
    if data[:3] != b"ID3":
        data = b"ID3\x04\x00\x00" + _to_syncsafe(0) + data
    major, frames_end, end = _id3_frames(data)
    encoding = b"\x03" if major == 4 else b"\x00"  # UTF-8 (v2.4), else Latin-1: the texts are ASCII
    added = b""
    for description, value in texts.items():
        body = encoding + description.encode() + b"\x00" + value.encode()
        size = _to_syncsafe(len(body)) if major == 4 else len(body).to_bytes(4, "big")
        added += b"TXXX" + size + b"\x00\x00" + body
    tag = data[10:frames_end] + added + data[frames_end:end]
    return data[:6] + _to_syncsafe(len(tag)) + tag + data[end:]


def read_id3_texts(data: bytes) -> dict[str, str]:
    """The TXXX (user-defined text) frames of a leading ID3v2 tag: description -> value; {} for others."""
    try:
        major, frames_end, _end = _id3_frames(data)
    except (ValueError, IndexError):
        return {}
    found: dict[str, str] = {}
    offset = 10
    while offset + 10 <= frames_end:
        raw = data[offset + 4 : offset + 8]
        size = _syncsafe(raw) if major == 4 else int.from_bytes(raw, "big")
        if data[offset : offset + 4] == b"TXXX":
            body = data[offset + 11 : offset + 10 + size]
            description, _, value = body.partition(b"\x00")
            found.setdefault(description.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        offset += 10 + size
    return found


# --- Vorbis comments (FLAC, Ogg) ----------------------------------------------------------------------------


def _with_comments(block: bytes, comments: list[str]) -> bytes:
    """A Vorbis comment structure (vendor, list, then any trailing bytes) with `comments` appended."""
    vendor_len = struct.unpack("<I", block[:4])[0]
    offset = 4 + vendor_len
    count = struct.unpack("<I", block[offset : offset + 4])[0]
    offset += 4
    for _ in range(count):
        offset += 4 + struct.unpack("<I", block[offset : offset + 4])[0]
    added = b"".join(struct.pack("<I", len(c.encode())) + c.encode() for c in comments)
    return (
        block[: 4 + vendor_len]
        + struct.pack("<I", count + len(comments))
        + block[4 + vendor_len + 4 : offset]
        + added
        + block[offset:]
    )


def flac_add_comments(data: bytes, comments: list[str]) -> bytes:
    """A FLAC file with `comments` added to its VORBIS_COMMENT block (one made when it has none)."""
    if data[:4] != b"fLaC":
        raise ValueError("not a FLAC file")
    blocks: list[tuple[int, bytes]] = []
    offset, last = 4, False
    while not last:
        header = data[offset]
        last, kind = bool(header & 0x80), header & 0x7F
        size = int.from_bytes(data[offset + 1 : offset + 4], "big")
        blocks.append((kind, data[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    if not any(kind == 4 for kind, _ in blocks):
        blocks.insert(1, (4, struct.pack("<I", 4) + b"aigc" + struct.pack("<I", 0)))
    blocks = [(k, _with_comments(b, comments) if k == 4 else b) for k, b in blocks]
    out = bytearray(b"fLaC")
    for i, (kind, body) in enumerate(blocks):
        out.append(kind | (0x80 if i == len(blocks) - 1 else 0))
        out += len(body).to_bytes(3, "big") + body
    return bytes(out) + data[offset:]


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _ogg_page(flags: int, granule: int, serial: int, seq: int, lacing: list[int], body: bytes) -> bytes:
    header = struct.pack("<4sBBqII", b"OggS", 0, flags, granule, serial, seq)
    page = header + b"\x00\x00\x00\x00" + bytes([len(lacing), *lacing]) + body
    return page[:22] + struct.pack("<I", _ogg_crc(page)) + page[26:]


def _ogg_pages(data: bytes) -> list[tuple[int, int, int, int, list[int], bytes]]:
    """(flags, granule, serial, sequence, lacing values, body) of each page."""
    pages, offset = [], 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS":
            raise ValueError("not an Ogg stream")
        _, flags, granule, serial, seq = struct.unpack("<BBqII", data[offset + 4 : offset + 22])
        count = data[offset + 26]
        lacing = list(data[offset + 27 : offset + 27 + count])
        start = offset + 27 + count
        pages.append((flags, granule, serial, seq, lacing, data[start : start + sum(lacing)]))
        offset = start + sum(lacing)
    return pages


def ogg_add_comments(data: bytes, comments: list[str]) -> bytes:
    """An Ogg Vorbis or Ogg Opus file (one stream) with `comments` added to its comment header; the header
    pages are laid out again, and the pages after them renumbered (and their CRC made again) when their
    count changed."""
    pages = _ogg_pages(data)
    packets: list[bytes] = []
    current = b""
    header_pages = 0
    for _flags, _granule, _serial, _seq, lacing, body in pages:
        header_pages += 1
        pos = 0
        for value in lacing:
            current += body[pos : pos + value]
            pos += value
            if value < 255:
                packets.append(current)
                current = b""
        wanted = 3 if packets and packets[0].startswith(b"\x01vorbis") else 2
        if len(packets) >= wanted:
            break
    if len(packets) != wanted or current or len({p[2] for p in pages}) != 1:
        raise ValueError("an Ogg layout aigc does not know")
    magic = b"\x03vorbis" if wanted == 3 else b"OpusTags"
    if not packets[1].startswith(magic):
        raise ValueError("an Ogg stream without its comment header")
    packets[1] = magic + _with_comments(packets[1][len(magic) :], comments)
    serial = pages[0][2]
    out = [_ogg_page(*pages[0][:2], serial, 0, pages[0][4], pages[0][5])]
    segments: list[tuple[int, bytes, bool]] = []  # (lacing value, bytes, ends a packet)
    for packet in packets[1:]:
        for start in range(0, len(packet) + 1, 255):
            piece = packet[start : start + 255]
            segments.append((len(piece), piece, len(piece) < 255))
            if len(piece) < 255:
                break
    continued = False
    while segments:
        chunk, segments = segments[:255], segments[255:]
        ends = any(end for _, _, end in chunk)
        granule = 0 if ends else -1
        page = _ogg_page(
            1 if continued else 0,
            granule,
            serial,
            len(out),
            [n for n, _, _ in chunk],
            b"".join(b for _, b, _ in chunk),
        )
        out.append(page)
        continued = not chunk[-1][2]
    shift = len(out) - header_pages
    for flags, granule, _serial, seq, lacing, body in pages[header_pages:]:
        out.append(_ogg_page(flags, granule, serial, seq + shift, lacing, body))
    return b"".join(out)


def read_vorbis_comments(data: bytes) -> dict[str, str]:
    """The Vorbis comments of a FLAC, Ogg Vorbis or Ogg Opus file (upper-case keys); {} for other files."""
    try:
        data = skip_id3(data)
        if data[:4] == b"fLaC":
            offset, last = 4, False
            while not last:
                header = data[offset]
                last, kind = bool(header & 0x80), header & 0x7F
                size = int.from_bytes(data[offset + 1 : offset + 4], "big")
                if kind == 4:
                    return _parse_comments(data[offset + 4 : offset + 4 + size])
                offset += 4 + size
            return {}
        if data[:4] == b"OggS":
            packet, index = b"", 0
            for *_, lacing, body in _ogg_pages(data):
                pos = 0
                for value in lacing:
                    packet += body[pos : pos + value]
                    pos += value
                    if value < 255:
                        if index == 1:
                            for magic in (b"\x03vorbis", b"OpusTags"):
                                if packet.startswith(magic):
                                    return _parse_comments(packet[len(magic) :])
                            return {}
                        packet, index = b"", index + 1
    except (IndexError, struct.error, ValueError):
        return {}
    return {}


def skip_id3(data: bytes) -> bytes:
    """The file after a leading ID3v2 tag (C2PA puts its manifest in one before a FLAC stream)."""
    while data[:3] == b"ID3" and len(data) >= 10:
        size = 0
        for byte in data[6:10]:
            size = (size << 7) | (byte & 0x7F)
        data = data[10 + size + (10 if data[5] & 0x10 else 0) :]
    return data


def _parse_comments(block: bytes) -> dict[str, str]:
    vendor_len = struct.unpack("<I", block[:4])[0]
    offset = 4 + vendor_len
    count = struct.unpack("<I", block[offset : offset + 4])[0]
    offset += 4
    found: dict[str, str] = {}
    for _ in range(count):
        size = struct.unpack("<I", block[offset : offset + 4])[0]
        key, _, value = block[offset + 4 : offset + 4 + size].decode("utf-8", "replace").partition("=")
        found.setdefault(key.upper(), value)
        offset += 4 + size
    return found


_XMP_FIELD = r'{}(?:="([^"]*)"|>([^<]*)<)'


def read_mark(data: bytes) -> tuple[str | None, str | None]:
    """(the IPTC digital source type URL, the creator tool) a file says, from its XMP (any tool's, attribute
    or element form, uncompressed) or its Vorbis comments; (None, None) when it says none."""
    import re

    found: list[str | None] = []
    for name in ("DigitalSourceType", "CreatorTool"):
        match = re.search(_XMP_FIELD.format(name).encode(), data)
        found.append((match.group(1) or match.group(2)).decode("utf-8", "replace") if match else None)
    if found[0] is None:
        tags = read_vorbis_comments(data) or read_id3_texts(data)
        return tags.get(VORBIS_TAG), tags.get(VORBIS_TOOL)
    return found[0], found[1]
