"""`/v1/realtime?intent=transcription` on the deployed app through the official `openai`
client's realtime connection: real voices in, turns with speakers and a known name out; and
the /live page in headless Chromium with a real-speech file as its microphone."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from tests.conftest import wer
from tests.realvoices import cached_meeting, voice_prompts

pytestmark = [pytest.mark.ray, pytest.mark.models]

VOICES = ["en_allison", "it_carlo", "fr_june"]


def _data_url(audio: np.ndarray) -> str:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def _allison_reference(rec) -> str:
    """Allison Smith enrolled from a 5-9 s prompt she does not say in the meeting."""
    said = " ".join(rec.texts)
    prompt = next(
        p
        for p in voice_prompts("en_allison")
        if p.text and p.text not in said and 5.0 < len(p.audio) / 16000 < 9.0
    )
    return _data_url(prompt.audio)


def _voice_at(rec, start: float, end: float) -> str | None:
    """The meeting voice that speaks most within [start, end]."""
    heard: dict[str, float] = {}
    for s, e, voice in rec.turns:
        overlap = min(e, end) - max(s, start)
        if overlap > 0:
            heard[voice] = heard.get(voice, 0.0) + overlap
    return max(heard, key=heard.get) if heard else None


def test_realtime_session_turns_speakers_and_a_known_name(serve_url):
    import openai

    rec = cached_meeting(VOICES, 0.75, seed=24)
    pcm = (np.clip(resample_poly(rec.audio, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()
    pcm += bytes(24000 * 2 * 2)  # 2 s of silence: the last turn ends
    client = openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused")
    events = []
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        first = conn.recv()
        assert first.type == "session.created"
        conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {
                            "model": "base",
                            "known_speaker_names": ["Allison"],
                            "known_speaker_references": [_allison_reference(rec)],
                        },
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        step = 24000 * 2 // 10  # 100 ms per append, sent at 8x real time
        for i in range(0, len(pcm), step):
            conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + step]).decode())
            time.sleep(0.0125)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            event = conn.recv()
            events.append(event)
            committed = [e for e in events if e.type == "input_audio_buffer.committed"]
            finished = [e for e in events if e.type.endswith("input_audio_transcription.completed")
                        or e.type.endswith("input_audio_transcription.failed")]  # fmt: skip
            if committed and len(finished) == len(committed) and len(committed) >= 6:
                break
    kinds = [e.type for e in events]
    assert "session.updated" in kinds and "error" not in kinds, [
        e for e in events if e.type == "error"
    ]
    assert not any(k.endswith("transcription.failed") for k in kinds)
    segments = [e for e in events if e.type.endswith("input_audio_transcription.segment")]
    assert len(segments) == len(committed)  # every turn completed, with its speaker
    assert len({s.speaker for s in segments}) >= 2
    voices = [_voice_at(rec, s.start, s.end) for s in segments]
    hers = [s.speaker for s, v in zip(segments, voices, strict=True) if v == "en_allison"]
    others = [s.speaker for s, v in zip(segments, voices, strict=True) if v and v != "en_allison"]
    assert hers and others
    assert sum(n == "Allison" for n in hers) / len(hers) >= 0.75, hers
    assert sum(n == "Allison" for n in others) / len(others) <= 0.2, others
    text = " ".join(s.text for s in sorted(segments, key=lambda s: s.start))
    assert wer(" ".join(t for t in rec.texts if t), text) <= 0.35


ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"


def test_live_page_captions_a_real_speech_microphone_in_chromium(serve_url, tmp_path):
    import httpx

    from tests.browser import Browser

    rec = cached_meeting(["en_allison", "it_carlo"], 0.5, seed=27, prompts_per_turn=(2, 3))
    second = np.zeros(16000, np.float32)
    wav = tmp_path / "microphone.wav"
    # At 48 kHz: Chromium's file microphone plays other rates at the wrong speed.
    mic = resample_poly(np.concatenate([second, rec.audio, second, second]), 3, 1)
    sf.write(wav, np.clip(mic, -1, 1), 48000, subtype="PCM_16")
    said = " ".join(rec.texts)
    samples = [
        p.audio
        for p in voice_prompts("en_allison")
        if p.text and p.text not in said and 4.0 < len(p.audio) / 16000 < 9.0
    ][:2]
    files = [("file", (f"s{i}.wav", _wav_bytes(a), "audio/wav")) for i, a in enumerate(samples)]
    enrolled = httpx.post(f"{serve_url}/v1/speakers", data={"name": "Allison"}, files=files)
    assert enrolled.status_code == 201, enrolled.text
    browser = Browser(wav, tmp_path / "profile")
    try:
        browser.open(f"{serve_url}/live?autostart=1&speakers=Allison")
        # The fake microphone plays the file once, in real time; then the captions settle.
        played = time.monotonic() + len(mic) / 48000
        deadline = played + 60
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            count = browser.evaluate("window.captions.length")
            if count != last:
                last, stable_since = count, time.monotonic()
            if time.monotonic() > played and count and time.monotonic() - stable_since > 6:
                break
        captions = browser.evaluate("window.captions")
        errors = browser.evaluate("window.liveErrors")
        page_text = browser.evaluate("document.getElementById('captions').innerText")
        shot = browser.screenshot(ARTIFACTS / "live_page.png")
    finally:
        browser.close()
        httpx.delete(f"{serve_url}/v1/speakers/{enrolled.json()['id']}")
    assert not errors, errors
    assert len(captions) >= 3, captions
    speakers = {c["speaker"] for c in captions}
    assert len(speakers) >= 2 and "Allison" in speakers, captions
    assert "Allison" in page_text and all(c["text"] for c in captions)
    assert shot.stat().st_size > 10_000


def _wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_cli_live_streams_a_file_and_prints_captions_with_speakers(serve_url, tmp_path):
    import re
    import subprocess
    import sys

    rec = cached_meeting(["en_allison", "it_carlo"], 0.5, seed=27, prompts_per_turn=(2, 3))
    wav = tmp_path / "meeting.wav"
    sf.write(wav, rec.audio, 16000, subtype="PCM_16")
    proc = subprocess.run(
        [sys.executable, "-m", "speech_cluster_client.cli", "live", str(wav),
         "--url", serve_url, "--speed", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    captions = re.findall(r"^\[(\d+):(\d\d\.\d)\] (\S+): (.*)$", proc.stdout, re.MULTILINE)
    assert len(captions) >= 3, proc.stdout
    assert len({c[2] for c in captions}) >= 2, proc.stdout
    starts = [int(m) * 60 + float(s) for m, s, _, _ in captions]
    assert all(0 <= t <= 31 for t in starts) and all(c[3] for c in captions)
