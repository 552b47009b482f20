"""Importing pyannote through the project is quiet, and only its torchcodec notice is hidden.

See deployments/models/quiet.py. Each check runs in a fresh interpreter, since pyannote warns
once, at its first import, and warning filters are process-wide.
"""

import subprocess
import sys
import textwrap
import wave

from tests.conftest import REPO

PYANNOTE_TEXT = "torchcodec is not installed correctly"


def _python(code: str) -> subprocess.CompletedProcess:
    # -W default: show every warning that our filter lets through, whatever PYTHONWARNINGS says.
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_project_import_of_pyannote_is_quiet_and_decoding_still_fails_loudly(tmp_path):
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16_000)
        f.writeframes(b"\0\0" * 1_600)
    out = _python(
        f"""
        import sys
        import deployments.models.diarization.pipeline
        # The diarizer runs as plain torch; pyannote is imported only to load a checkpoint,
        # each time after the project's filter (pyannet.from_pyannote, bench/gpu_bundle.py).
        print("pipeline imports pyannote", "pyannote" in sys.modules)
        from deployments.models.quiet import silence_torchcodec_warning
        silence_torchcodec_warning()
        import pyannote.audio
        from pyannote.audio.core import io

        print("available", io.TORCHCODEC_AVAILABLE)
        if not io.TORCHCODEC_AVAILABLE:
            try:
                io.Audio()({str(wav)!r})
            except RuntimeError as e:
                print("decode error:", e)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "pipeline imports pyannote False" in out.stdout
    assert PYANNOTE_TEXT not in out.stderr
    assert "torchcodec" not in out.stderr.lower()
    assert "Traceback" not in out.stderr
    if "available False" in out.stdout:
        # The silenced notice was about this: decoding a file must still raise.
        assert "decode error: torchcodec is not available" in out.stdout


def test_filter_hides_only_pyannotes_import_notice():
    out = _python(
        """
        import warnings

        import deployments.models.quiet

        notice = (
            "\\ntorchcodec is not installed correctly so built-in audio decoding will fail. "
            "Solutions are: ..."
        )
        # pyannote's own notice, as issued by pyannote.audio.core.io: hidden.
        warnings.warn_explicit(notice, UserWarning, "io.py", 48, module="pyannote.audio.core.io")
        # Anything else still shows.
        warnings.warn_explicit(
            "torchcodec failed to decode audio: SENTINEL-1",
            UserWarning,
            "io.py",
            60,
            module="pyannote.audio.core.io",
        )
        warnings.warn_explicit(
            notice + " SENTINEL-2", UserWarning, "other.py", 1, module="torchcodec._core"
        )
        warnings.warn_explicit(
            notice + " SENTINEL-3", RuntimeWarning, "io.py", 48, module="pyannote.audio.core.io"
        )
        warnings.warn("torchcodec: something else went wrong SENTINEL-4", UserWarning)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count(PYANNOTE_TEXT) == 2, out.stderr  # SENTINEL-2 and -3 only
    for n in range(1, 5):
        assert f"SENTINEL-{n}" in out.stderr, out.stderr
