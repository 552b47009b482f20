"""Silence pyannote.audio's import-time torchcodec warning, and nothing else.

Importing `pyannote.audio` imports `pyannote.audio.core.io`, which tries to load torchcodec
(an FFmpeg-based file decoder). Without FFmpeg shared libraries, that module emits one
UserWarning of ~30 lines ("torchcodec is not installed correctly so built-in audio decoding
will fail ...") on every import: during install, at `serve run`, in every diarizer replica.
This service never asks pyannote to decode a file: audio is decoded by our own code and
handed to pyannote in memory as a {"waveform": tensor, "sample_rate": int} dictionary, so
that decoder is never used and the warning is noise.

The filter matches only that message's start, only as a UserWarning, and only when issued
from `pyannote.audio.core.io`. Every other warning stays visible, including other torchcodec
warnings; and should pyannote ever be asked to decode a file after all, it raises its own
RuntimeError ("torchcodec is not available. Cannot read audio ..."), which no filter hides.

Importing this module installs the filter; `silence_torchcodec_warning()` installs it again
(idempotent) and is called right before each of the project's pyannote imports.
"""

from __future__ import annotations

import warnings

# `warnings` matches this with re.match (case-insensitive) against the start of the message,
# which pyannote begins with a newline.
TORCHCODEC_MESSAGE = (
    r"\s*torchcodec is not installed correctly so built-in audio decoding will fail"
)
TORCHCODEC_MODULE = r"pyannote\.audio\.core\.io$"


def silence_torchcodec_warning() -> None:
    """Ignore pyannote.audio's "torchcodec is not installed correctly" import warning."""
    warnings.filterwarnings(
        "ignore", message=TORCHCODEC_MESSAGE, category=UserWarning, module=TORCHCODEC_MODULE
    )


silence_torchcodec_warning()
