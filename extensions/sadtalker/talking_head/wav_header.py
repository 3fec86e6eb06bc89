"""How much audio a WAV file's header announces, against how much the file holds.

libsndfile trusts the bytes that are there: a two-hour recording whose upload or copy stopped after one second
reads as a one-second clip, and the user gets a video of the wrong length without a word. Reading the RIFF
chunks ourselves tells a cut-short file from a short one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

# Writers that stream (ffmpeg to a pipe, some recorders) leave these in the size fields: "length unknown".
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_MAX_CHUNKS = 64  # a WAV has a handful of chunks before "data"; more means garbage, not a header


@dataclass(frozen=True)
class WavLength:
    declared_seconds: float
    present_seconds: float

    @property
    def missing_seconds(self) -> float:
        return self.declared_seconds - self.present_seconds


def wav_length(path: Path) -> WavLength | None:
    """Declared and present seconds of the `data` chunk of a RIFF/WAVE file; None when the file is not a plain
    RIFF WAV (RF64, another format) or its header says "length unknown"."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        bytes_per_second = 0
        for _ in range(_MAX_CHUNKS):
            header = f.read(8)
            if len(header) < 8:
                return None
            kind, length = header[:4], struct.unpack("<I", header[4:])[0]
            if kind == b"fmt ":
                fmt = f.read(min(length, 16))
                if len(fmt) < 12:
                    return None
                bytes_per_second = struct.unpack("<I", fmt[8:12])[0]  # nAvgBytesPerSec, right for ADPCM too
                f.seek(length - len(fmt) + (length & 1), 1)
            elif kind == b"data":
                if length in _UNKNOWN_SIZES or bytes_per_second <= 0:
                    return None
                present = max(0, size - f.tell())
                return WavLength(length / bytes_per_second, min(length, present) / bytes_per_second)
            else:
                f.seek(length + (length & 1), 1)  # chunks are padded to an even length
    return None
