"""ADTS-framed AAC (what MPEG-TS carries) copied into mp4, mov or matroska.

MPEG-TS stores AAC as ADTS frames: every packet starts with a 7- or 9-byte header that repeats the codec
configuration, and the stream has no extradata. mp4/mov and matroska want raw AAC packets plus the
configuration (an MPEG-4 AudioSpecificConfig) in the file header. FFmpeg's muxers insert the
``aac_adtstoasc`` filter by themselves, but only a file they can rewrite later survives that; the
fragmented mp4 of a pipe (``empty_moov``) refuses the first packet ("Malformed AAC bitstream", error -1, which PyAV
reports as "Operation not permitted"), and matroska on a pipe fails with EINVAL.

:class:`AdtsToAsc` strips the headers with FFmpeg's ``aac_adtstoasc`` filter and reads the
AudioSpecificConfig from the first ADTS header (ISO/IEC 14496-3: ``adts_fixed_header`` ->
``AudioSpecificConfig``), so the writer can put it into the output stream before the header is written.
"""
from __future__ import annotations

from typing import Optional

#: sampling_frequency_index -> Hz (ISO/IEC 14496-3)
SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
#: FFmpeg profile name -> MPEG-4 audio object type (ADTS can signal only these four)
OBJECT_TYPES = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4}
#: containers that need the AudioSpecificConfig in their header
NEEDS_CONFIG = ("mp4", "mov", "matroska")


def is_adts(data: bytes) -> bool:
    """Whether ``data`` starts with an ADTS frame header (12-bit sync word 0xFFF)."""
    return len(data) >= 7 and data[0] == 0xFF and (data[1] & 0xF0) == 0xF0


def _config(object_type: int, rate_index: int, channels: int) -> bytes:
    # 5 bits object type, 4 bits sampling frequency index, 4 bits channel configuration, 3 zero bits
    # (GASpecificConfig: 1024-sample frames, no core coder, no extension)
    return ((object_type << 11) | (rate_index << 7) | (channels << 3)).to_bytes(2, "big")


def config_from_adts(data: bytes) -> Optional[bytes]:
    """The 2-byte AudioSpecificConfig an ADTS header describes, or None (no header, or a PCE layout)."""
    if not is_adts(data):
        return None
    profile = data[2] >> 6
    rate_index = (data[2] >> 2) & 0x0F
    channels = ((data[2] & 0x01) << 2) | (data[3] >> 6)
    if rate_index >= len(SAMPLE_RATES) or channels == 0:  # channels 0: layout in a PCE, not in the header
        return None
    return _config(profile + 1, rate_index, channels)


def config_from_params(profile: Optional[str], sample_rate: int, channels: int) -> Optional[bytes]:
    """An AudioSpecificConfig from decoder parameters (used only when no audio packet ever arrives)."""
    if profile not in OBJECT_TYPES or sample_rate not in SAMPLE_RATES or not 1 <= channels <= 7:
        return None
    return _config(OBJECT_TYPES[profile], SAMPLE_RATES.index(sample_rate), channels)


def needs_conversion(template, container: str) -> bool:
    """Whether audio copied from ``template`` (an input stream) must go through :class:`AdtsToAsc`."""
    ctx = template.codec_context
    return container in NEEDS_CONFIG and ctx.name == "aac" and not ctx.extradata


class AdtsToAsc:
    """Turns ADTS AAC packets into raw AAC; ``config`` is the AudioSpecificConfig once a packet was seen."""

    def __init__(self, template) -> None:
        from av.bitstream import BitStreamFilterContext

        self._template = template
        self._bsf = BitStreamFilterContext("aac_adtstoasc", template)
        self.config: Optional[bytes] = None

    def filter(self, packet) -> list:
        """Raw AAC packets for one input packet (same timestamps). Raises ValueError on non-ADTS data."""
        if self.config is None:
            self.config = config_from_adts(bytes(packet))
            if self.config is None:
                raise ValueError("the input's AAC audio has neither a codec configuration nor ADTS headers")
        time_base = packet.time_base  # the filter takes the packet's contents
        out = self._bsf.filter(packet)
        for p in out:
            p.time_base = time_base
        return out

    def fallback_config(self) -> Optional[bytes]:
        """A configuration from the input stream's parameters, for a stream without any packet."""
        ctx = self._template.codec_context
        return config_from_params(ctx.profile, ctx.sample_rate, ctx.channels)
