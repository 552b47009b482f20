"""Long multi-speaker recordings of real human voices with exact ground truth.

The voices are Debian's Asterisk telephone prompts: each package is one professional voice
talent reading a few hundred studio prompts (8 kHz mono, 10-28 min of speech per voice).
A recording alternates speakers turn by turn, each turn a few prompts of one voice, and keeps
every prompt's sample-exact span and, within it, where the voice actually speaks (measured on
the clean prompt before mixing, tests/speechspans.py), so diarization tests and benchmarks get
real voices with an exact reference. The packages come from scripts/install.sh (as root).
Each voice reads one language (LANGUAGE), so a recording's turn_spans also give the language
of every turn (turn_languages): mixed-language recordings for multilingual tests.
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tests.speechspans import speech_spans

SAMPLE_RATE = 16_000
_SOUNDS = "/usr/share/asterisk/sounds"

# Voice id -> glob of its prompts. The talents are named in /usr/share/doc/<package>/copyright
# (es_co: LEEME); a speaker-embedding check found each package to be one consistent voice.
VOICES: dict[str, str] = {
    "en_allison": f"{_SOUNDS}/en_US_f_Allison/**/*.wav",  # Allison Smith
    # Allison Smith again (the Digium Spanish set): the SAME PERSON as en_allison, so it is in
    # neither split below; useful only for a cross-language same-speaker check.
    "es_mx": f"{_SOUNDS}/es_MX_f_Allison/**/*.wav",
    "fr_june": f"{_SOUNDS}/fr_CA_f_June/**/*.wav",  # June Wallack (Canadian French)
    "it_carlo": f"{_SOUNDS}/it_IT_m_Carlo/**/*.wav",  # Carlo Flora (the only male voice)
    "ru": f"{_SOUNDS}/ru_RU_f_IvrvoiceRU/**/*.wav",  # ivrvoice.ru's female talent (unnamed)
    "es_co": f"{_SOUNDS}/es/**/*.gsm",  # July E. Jiménez (Avatar Ltda.), raw GSM 06.10
    "fr_armelle": f"{_SOUNDS}/fr/**/*.gsm",  # Armelle Desjardins, raw GSM 06.10
    # Credited to Marco Menardi and Paola Dal Zot; one female voice, so presumably the latter.
    "it_menardi": f"{_SOUNDS}/it_IT_f_Menardi/**/*.wav",
}
PACKAGES: dict[str, str] = {
    "en_allison": "asterisk-core-sounds-en-wav",
    "es_mx": "asterisk-core-sounds-es-wav",
    "fr_june": "asterisk-core-sounds-fr-wav",
    "it_carlo": "asterisk-core-sounds-it-wav",
    "ru": "asterisk-core-sounds-ru-wav",
    "es_co": "asterisk-prompt-es-co",
    "fr_armelle": "asterisk-prompt-fr-armelle",
    "it_menardi": "asterisk-prompt-it-menardi-wav",
}
# Voice id -> the ISO 639-1 code of the language it reads.
LANGUAGE: dict[str, str] = {
    "en_allison": "en",
    "es_mx": "es",
    "fr_june": "fr",
    "it_carlo": "it",
    "ru": "ru",
    "es_co": "es",
    "fr_armelle": "fr",
    "it_menardi": "it",
}
# Transcripts, `name: text` lines, from asterisk-core-sounds-<lang> (which reads the same
# prompts as -<lang>-wav). asterisk-core-sounds-es/-fr conflict with es_co and fr_armelle (their
# alternatives symlink replaces the es/ and fr/ directories): es_mx has none, and for fr_june
# scripts/install.sh extracts only the transcript file from the -fr .deb, uninstalled.
# es_co, fr_armelle and it_menardi are other recordings, with other wordings: none.
_DOCS = "/usr/share/doc"
TRANSCRIPTS: dict[str, str] = {
    "en_allison": f"{_DOCS}/asterisk-core-sounds-en/core-sounds-en.txt.gz",
    "fr_june": "/usr/share/speech-cluster/transcripts/core-sounds-fr.txt.gz",
    "it_carlo": f"{_DOCS}/asterisk-core-sounds-it/core-sounds-it.txt.gz",
    "ru": f"{_DOCS}/asterisk-core-sounds-ru/core-sounds-ru.txt.gz",
}
# core-sounds-fr.txt names two entries unlike their prompt files, and runs one line into the
# next entry ("...appuyez sur dièse.vm-review-nonurgent: ...", which also has its own line).
_FR_RENAMED = {"confbridge-lock-out-0": "confbridge-lock-out", "dollars": "digits/dollars"}
_RUN_ON = re.compile(r"(?<=[.!?])[a-z][\w/]*(?:-[\w/]+)+:\s.*$")
# Voice ids of one person: a meeting holding both has one bilingual speaker (reference labels,
# annotation() and rttm(), name the person by the first id).
PERSON: dict[str, str] = {"es_mx": "en_allison"}
# Tune on one set, report on the other: no person is in both (es_mx is en_allison).
TUNE_VOICES = ["en_allison", "fr_june", "it_carlo", "es_co"]
HELDOUT_VOICES = ["ru", "fr_armelle", "it_menardi"]

_NON_SPEECH = {"beep", "beeperr", "ascending-2tone", "descending-2tone", "tt-monkeys"}
_SILENCE = 10 ** (-50 / 20)  # digital silence: below -50 dBFS
_MIN_PROMPT_S = 0.5
CACHE_DIR = Path(tempfile.gettempdir()) / "speech-cluster-realvoices"
_CACHE_VERSION = 3  # bump when the construction changes, to invalidate cached recordings


@dataclass
class RealRecording:
    """A mixed recording and its exact reference.

    Attributes:
        audio: 16 kHz mono float32.
        turns: (start, end, voice id) of every stretch of speech, in seconds: the pauses
            within a prompt (speechspans.speech_spans) and between prompts are not speech.
        turn_spans: (start, end, voice id) of every turn, first prompt start to last prompt end.
        texts: per turn, the prompts' transcripts joined ("" where the voice has none).
        prompt_spans: (start, end, voice id) of every whole prompt (trimmed of digital silence).
    """

    audio: np.ndarray
    turns: list[tuple[float, float, str]]
    turn_spans: list[tuple[float, float, str]]
    texts: list[str]
    prompt_spans: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def rttm(self, uri: str) -> str:
        """The reference as RTTM lines, one per stretch of speech."""
        return "".join(
            f"SPEAKER {uri} 1 {s:.6f} {e - s:.6f} <NA> <NA> {PERSON.get(v, v)} <NA> <NA>\n"
            for s, e, v in self.turns
        )

    def annotation(self, uri: str | None = None):
        """The reference as a pyannote.core.Annotation, one track per stretch of speech."""
        from pyannote.core import Annotation, Segment

        ann = Annotation(uri=uri)
        for i, (s, e, v) in enumerate(self.turns):
            ann[Segment(s, e), i] = PERSON.get(v, v)
        return ann

    def write_wav(self, path: str | Path) -> Path:
        """Write the audio as 16-bit PCM."""
        sf.write(str(path), self.audio, SAMPLE_RATE, subtype="PCM_16")
        return Path(path)


@dataclass(frozen=True)
class _Prompt:
    audio: np.ndarray  # 16 kHz float32, digital silence trimmed
    text: str
    spans: tuple[tuple[int, int], ...]  # speech within audio, in samples
    name: str = ""  # e.g. "conf-getpin": the same prompt in every language's package


def _transcripts(voice: str) -> dict[str, str]:
    """Prompt name (its path under the voice's folder, no extension) -> transcript."""
    if voice not in TRANSCRIPTS:
        return {}
    path = Path(TRANSCRIPTS[voice])
    if not path.exists():
        pkg = "asterisk-" + path.name.removesuffix(".txt.gz")
        raise RuntimeError(f"{path} is missing: scripts/install.sh (as root) installs it ({pkg})")
    out = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8-sig", "replace").splitlines():
        name, sep, text = line.partition(":")
        if sep and not line.startswith(";"):
            text = text.strip().removeprefix(f"{name}:")  # ru repeats some names
            name = name.strip()
            if voice == "fr_june":
                name, text = _FR_RENAMED.get(name, name), _RUN_ON.sub("", text)
            # [@], (tone plays): annotations, not words.
            out[name] = " ".join(re.sub(r"\[[^]]*\]|\([^)]*\)", " ", text).split())
    return out


def _read(path: str) -> tuple[np.ndarray, int]:
    if path.endswith(".gsm"):  # headerless GSM 06.10, always 8 kHz mono
        return sf.read(
            path, format="RAW", subtype="GSM610", samplerate=8000, channels=1, dtype="float32"
        )
    return sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1), sf.info(path).samplerate


@functools.cache
def _prompts(voice: str) -> tuple[_Prompt, ...]:
    """Every speech prompt of a voice, decoded, trimmed and resampled once per process."""
    pattern = VOICES[voice]
    root = pattern.split("/**", 1)[0]
    if os.path.islink(root):
        raise RuntimeError(
            f"{root} is a symlink, not {PACKAGES[voice]}'s directory (asterisk-core-sounds-es"
            f" or -fr replaced it): remove those and reinstall {PACKAGES[voice]}"
        )
    texts = _transcripts(voice)
    prompts = []
    for path in sorted(glob.glob(pattern, recursive=True)):
        name = os.path.splitext(os.path.relpath(path, root))[0]
        if name.startswith("silence/") or name in _NON_SPEECH:
            continue
        audio, rate = _read(path)
        loud = np.flatnonzero(np.abs(audio) >= _SILENCE)
        if loud.size == 0:
            continue
        audio = audio[loud[0] : loud[-1] + 1]
        if rate != SAMPLE_RATE:
            g = np.gcd(rate, SAMPLE_RATE)
            audio = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
        if len(audio) > _MIN_PROMPT_S * SAMPLE_RATE:
            spans = tuple(speech_spans(audio, SAMPLE_RATE))
            prompts.append(_Prompt(audio, texts.get(name, ""), spans, name))
    if not prompts:
        raise RuntimeError(
            f"no prompts for voice {voice!r} ({pattern}): install the Debian package "
            f"{PACKAGES[voice]} (scripts/install.sh)"
        )
    return tuple(prompts)


def build_meeting(
    voices: list[str],
    minutes: float,
    seed: int = 0,
    overlap_prob: float = 0.0,
    prompts_per_turn: tuple[int, int] = (1, 4),
) -> RealRecording:
    """A recording of `minutes` (exactly) in which the voices take turns.

    Each turn is 1-4 prompts (`prompts_per_turn`) of one voice (0.1-0.4 s apart); the next
    voice, never the same one twice in a row (two voice ids of one PERSON may follow each
    other: a bilingual speaker changing language), follows after 0.3-1.5 s or, with
    probability overlap_prob, starts 0.3-1.0 s before the turn ends (at most half of either
    turn, so at most two voices speak at once). Each voice's prompts are drawn without
    replacement until all have been used. Natural levels are kept; the whole mix is scaled
    down only if it would clip.
    """
    if len(voices) < 2:
        raise ValueError("need at least two voices")
    rng = np.random.default_rng(seed)
    pools = {v: _prompts(v) for v in voices}
    queues: dict[str, list[int]] = {v: [] for v in voices}
    total = round(minutes * 60 * SAMPLE_RATE)
    placed: list[tuple[int, np.ndarray, str]] = []  # (start sample, audio, voice)
    turns, spans, texts, prompt_spans = [], [], [], []
    cursor, prev, prev_start = 0, None, 0  # end of the last turn (samples), its voice, start
    while True:
        voice = voices[rng.choice([i for i, v in enumerate(voices) if v != prev])]
        picks = []
        for _ in range(int(rng.integers(prompts_per_turn[0], prompts_per_turn[1] + 1))):
            if not queues[voice]:  # cycle through a fresh shuffle of the whole pool
                queues[voice] = rng.permutation(len(pools[voice])).tolist()
            picks.append(pools[voice][queues[voice].pop()])
        gaps = [round(rng.uniform(0.1, 0.4) * SAMPLE_RATE) for _ in picks[1:]]
        length = sum(len(p.audio) for p in picks) + sum(gaps)
        if prev is not None and rng.random() < overlap_prob:
            back = min(rng.uniform(0.3, 1.0) * SAMPLE_RATE, (cursor - prev_start) / 2, length / 2)
            start = cursor - round(back)
        else:
            start = cursor + round(rng.uniform(0.3, 1.5) * SAMPLE_RATE)
        if start + length > total:
            break
        t = start
        for p, gap in zip(picks, [*gaps, 0], strict=True):
            placed.append((t, p.audio, voice))
            prompt_spans.append((t / SAMPLE_RATE, (t + len(p.audio)) / SAMPLE_RATE, voice))
            turns += [((t + a) / SAMPLE_RATE, (t + b) / SAMPLE_RATE, voice) for a, b in p.spans]
            t += len(p.audio) + gap
        spans.append((start / SAMPLE_RATE, (start + length) / SAMPLE_RATE, voice))
        texts.append(" ".join(p.text for p in picks if p.text))
        cursor, prev, prev_start = start + length, voice, start
    audio = np.zeros(total, np.float32)
    for t, a, _ in placed:
        audio[t : t + len(a)] += a
    peak = float(np.abs(audio).max(initial=0.0))
    # Overlaps and resampling overshoot (peaks up to 1.12) can clip; one gain keeps the levels.
    if peak > 0.99:
        audio *= 0.99 / peak
    return RealRecording(audio, turns, spans, texts, prompt_spans)


def wav_bytes(audio: np.ndarray) -> bytes:
    """16 kHz audio as the bytes of a 16-bit WAV file (an upload)."""
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def turn_languages(
    recording: RealRecording, speech: bool = False
) -> list[tuple[float, float, str]]:
    """(start, end, ISO 639-1 code) of every turn (turn_spans, parallel to texts), or with
    speech=True of every stretch of speech (turns)."""
    return [
        (s, e, LANGUAGE[v]) for s, e, v in (recording.turns if speech else recording.turn_spans)
    ]


def texts_by_language(recording: RealRecording) -> dict[str, str]:
    """The turns' transcripts joined per language, in time order: the references for
    tests.multilingual.words_by_language. Voices without transcripts add nothing."""
    out: dict[str, list[str]] = {}
    for (_, _, voice), text in zip(recording.turn_spans, recording.texts, strict=True):
        if text:
            out.setdefault(LANGUAGE[voice], []).append(text)
    return {lang: " ".join(texts) for lang, texts in out.items()}


def cached_meeting(
    voices: list[str],
    minutes: float,
    seed: int = 0,
    overlap_prob: float = 0.0,
    cache_dir: Path = CACHE_DIR,
    prompts_per_turn: tuple[int, int] = (1, 4),
) -> RealRecording:
    """build_meeting, kept in cache_dir as <key>.wav (16-bit, so the audio comes back
    quantised) and <key>.json (turns, turn_spans, texts, prompt_spans), and reused."""
    params = [list(voices), minutes, seed, overlap_prob, _CACHE_VERSION]
    if prompts_per_turn != (1, 4):
        params.append(list(prompts_per_turn))
    key = hashlib.sha1(json.dumps(params).encode()).hexdigest()[:16]
    wav, meta = cache_dir / f"{key}.wav", cache_dir / f"{key}.json"
    if wav.exists() and meta.exists():
        ref = json.loads(meta.read_text())
        audio = sf.read(str(wav), dtype="float32")[0]
        turns, spans, prompts = (
            [(s, e, v) for s, e, v in ref[k]] for k in ("turns", "turn_spans", "prompt_spans")
        )
        return RealRecording(audio, turns, spans, ref["texts"], prompts)
    rec = build_meeting(voices, minutes, seed, overlap_prob, prompts_per_turn)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write-then-rename, and the json last: parallel test workers never see half a file.
    tmp = f".{os.getpid()}.tmp"
    rec.write_wav(wav.with_suffix(tmp + ".wav"))
    os.replace(wav.with_suffix(tmp + ".wav"), wav)
    ref = {"params": params, "turns": rec.turns, "turn_spans": rec.turn_spans}
    ref |= {"texts": rec.texts, "prompt_spans": rec.prompt_spans}
    meta.with_suffix(tmp).write_text(json.dumps(ref, ensure_ascii=False))
    os.replace(meta.with_suffix(tmp), meta)
    return rec


def real_speech(minutes: float, seed: int = 1):
    """About `minutes` of real speech: Debian's Allison prompts (en_US, with transcripts)
    read one after another with 0.3-1.0 s pauses, repeated in a new order once all are used.

    What users send is real speech, so throughput is measured on it, not on espeak.
    Returns a tests.synth.Recording (turns: start, end, voice).
    """
    from tests.synth import Recording

    prompts = [p for p in voice_prompts("en_allison") if p.text]
    rng = np.random.default_rng(seed)
    target = int(minutes * 60 * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    turns: list[tuple[float, float, str]] = []
    texts: list[str] = []
    size = 0
    while size < target:
        for i in rng.permutation(len(prompts)):
            if size >= target:
                break
            gap = np.zeros(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE), np.float32)
            audio = prompts[i].audio
            start = (size + len(gap)) / SAMPLE_RATE
            pieces += [gap, audio]
            size += len(gap) + len(audio)
            turns.append((start, size / SAMPLE_RATE, "en_allison"))
            texts.append(prompts[i].text)
    pieces.append(np.zeros(SAMPLE_RATE // 2, np.float32))
    return Recording(np.concatenate(pieces), turns, texts)


if __name__ == "__main__":
    import time

    # Run as `python -m tests.realvoices` (it imports tests.speechspans).
    # Timings: "cold" includes decoding, trimming and resampling every prompt of the voices.
    for voices, minutes, cold in (
        (TUNE_VOICES[:3], 20.0, True),
        (HELDOUT_VOICES[:3], 2.0, True),
        (TUNE_VOICES[:3], 60.0, True),
        (TUNE_VOICES[:3], 60.0, False),
    ):
        if cold:
            _prompts.cache_clear()
        t0 = time.perf_counter()
        rec = build_meeting(voices, minutes, seed=0, overlap_prob=0.1)
        took = time.perf_counter() - t0
        speech = {v: round(sum(e - s for s, e, w in rec.turns if w == v), 1) for v in voices}
        print(
            f"{minutes:g} min {voices}: {rec.duration:.1f} s, {len(rec.turn_spans)} turns, "
            f"{len(rec.prompt_spans)} prompts, speech s {speech}, "
            f"built in {took:.2f} s ({'cold' if cold else 'warm'})"
        )


def voice_prompts(voice: str) -> tuple[_Prompt, ...]:
    """Every speech prompt of a voice (16 kHz, trimmed), for tests that need isolated clips."""
    return _prompts(voice)
