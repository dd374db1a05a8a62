"""gzip bodies made of pieces compressed once each: a change recompresses only its own piece.

Each piece is a raw deflate stream flushed to a byte boundary (Z_SYNC_FLUSH) by a
fresh compressor, so pieces never refer to each other and can be laid end to end;
one empty final block and the gzip trailer (CRC-32 and length of the whole) close
the member.
"""

import struct
import zlib

LEVEL = 6
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, deflate, no name, no time, unknown OS
_FINAL_BLOCK = b"\x03\x00"                             # an empty final block with fixed codes


class Deflated:
    """``raw`` bytes and their stand-alone deflate stream."""

    __slots__ = ("raw", "packed", "_crc")

    def __init__(self, raw, level=LEVEL):
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.raw = raw
        self.packed = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._crc = None

    @property
    def crc(self):
        """CRC-32 of ``raw`` alone, computed once: what a body that starts with this piece reuses."""
        if self._crc is None:
            self._crc = zlib.crc32(self.raw)
        return self._crc


def gzip_join(pieces):
    """One gzip member whose content is every piece's ``raw``, in order."""
    crc, size = 0, 0
    for index, piece in enumerate(pieces):
        crc = piece.crc if index == 0 else zlib.crc32(piece.raw, crc)
        size += len(piece.raw)
    return b"".join([_HEADER, *(piece.packed for piece in pieces), _FINAL_BLOCK,
                     struct.pack("<II", crc, size & 0xFFFFFFFF)])


def joined(pieces, separator, opening=b"", closing=b""):
    """Deflated pieces with ``separator`` between them, between ``opening`` and ``closing``."""
    between = Deflated(separator)
    laid = [Deflated(opening)] if opening else []
    for index, piece in enumerate(pieces):
        if index:
            laid.append(between)
        laid.append(piece)
    if closing:
        laid.append(Deflated(closing))
    return laid
