"""Kaldi log-mel filterbank features in plain torch, on any device.

What `torchaudio.compliance.kaldi.fbank` computes with CAM++'s settings (16 kHz, 25 ms
frames every 10 ms, edges snipped, DC offset removed, pre-emphasis 0.97, Povey window, 512-point
FFT power spectrum, 80 triangular mel bins from 20 Hz to Nyquist, log floored at float32 eps,
no dither, no energy), so the embedder needs torch alone and runs its features where its
model runs (a GPU computes them in a batch with the forward pass).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16_000
FRAME = 400  # 25 ms
SHIFT = 160  # 10 ms
FFT = 512
LOW_HZ = 20.0
PREEMPHASIS = 0.97
EPSILON = torch.finfo(torch.float32).eps


def _mel(hz):
    return (
        1127.0 * (1.0 + hz / 700.0).log()
        if torch.is_tensor(hz)
        else 1127.0 * math.log(1.0 + hz / 700.0)
    )


@lru_cache(maxsize=8)
def _mel_banks(bins: int) -> torch.Tensor:
    """(bins, FFT / 2 + 1) triangular filters, Kaldi's construction."""
    low, high = _mel(LOW_HZ), _mel(SAMPLE_RATE / 2)
    delta = (high - low) / (bins + 1)
    b = torch.arange(bins).unsqueeze(1)
    left, centre, right = low + b * delta, low + (b + 1.0) * delta, low + (b + 2.0) * delta
    mel = _mel(SAMPLE_RATE / FFT * torch.arange(FFT // 2)).unsqueeze(0)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin gets no weight


@lru_cache(maxsize=8)
def _window(device: torch.device) -> torch.Tensor:
    return torch.hann_window(FRAME, periodic=False, device=device).pow(0.85)


def fbank(wave: torch.Tensor, bins: int = 80) -> torch.Tensor:
    """(frames, bins) log-mel energies of a 1-D float32 waveform (any scale, any device)."""
    n = wave.shape[0]
    if n < FRAME:
        return wave.new_zeros((0, bins))
    frames = wave.as_strided((1 + (n - FRAME) // SHIFT, FRAME), (SHIFT * wave.stride(0), 1))
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - PREEMPHASIS * previous) * _window(wave.device)
    power = torch.fft.rfft(frames, n=FFT).abs().pow(2.0)
    banks = _mel_banks(bins).to(device=wave.device, dtype=wave.dtype)
    return torch.clamp_min(power @ banks.T, EPSILON).log()
