"""ADTS -> AudioSpecificConfig: the configuration read from real MPEG-TS packets matches the encoder's."""
import io

import av

from tests.io.media import video_bytes
from vidtriplane.io import aac


def _first_audio(container: str):
    data = video_bytes(n_frames=3, container=container)
    c = av.open(io.BytesIO(data))
    stream = c.streams.audio[0]
    packet = next(p for p in c.demux(stream) if p.size)
    return c, stream, bytes(packet)


def test_config_from_a_real_adts_header_matches_the_mp4_config():
    ts, ts_stream, ts_packet = _first_audio("mpegts")
    mp4, mp4_stream, mp4_packet = _first_audio("mp4")
    assert aac.is_adts(ts_packet) and not aac.is_adts(mp4_packet)
    assert mp4_stream.codec_context.extradata[:2] == b"\x14\x08"  # AAC-LC, 16 kHz, mono (the encoder's)
    assert aac.config_from_adts(ts_packet) == b"\x14\x08"
    assert aac.config_from_params("LC", 16000, 1) == b"\x14\x08"
    assert aac.needs_conversion(ts_stream, "mp4") and aac.needs_conversion(ts_stream, "matroska")
    assert not aac.needs_conversion(ts_stream, "nut") and not aac.needs_conversion(mp4_stream, "mp4")
    ts.close()
    mp4.close()


def test_filter_strips_the_adts_header_and_keeps_timestamps():
    c, stream, _ = _first_audio("mpegts")
    conv = aac.AdtsToAsc(stream)
    packets = [p for p in c.demux(stream) if p.size][:3]
    for p in packets:
        pts, size, head = p.pts, p.size, bytes(p)
        header = 7 if head[1] & 0x01 else 9  # protection_absent: no CRC
        (out,) = conv.filter(p)
        assert out.pts == pts and out.time_base == stream.time_base
        assert bytes(out) == head[header:] and out.size == size - header
    assert conv.config == b"\x14\x08"
    c.close()


def test_unknown_layouts_give_no_config():
    assert aac.config_from_adts(b"\x00" * 9) is None
    assert aac.config_from_adts(bytes([0xFF, 0xF1, 0x50, 0x00, 0, 0, 0])) is None  # channel config 0 (PCE)
    assert aac.config_from_params("HE-AAC", 44100, 2) is None
    assert aac.config_from_params("LC", 44056, 2) is None
