"""segmentation-3.0's network (pyannote's PyanNet) in plain torch.

The same layers and weights as pyannote.audio's PyanNet, so a forward pass needs torch
alone: SincNet (80 band-pass filters of 251 taps, stride 10, then two 5-tap convolutions,
each stage max-pooled by 3, instance-normed and leaky-ReLU'd), a 4-layer bidirectional
LSTM of 128 units, two linear layers of 128 and a 7-class powerset classifier (log-softmax).

The band-pass filters are computed once from the learned cut-off frequencies (asteroid's
ParamSincFB formula) and kept as a fixed convolution. `export_state` turns a loaded pyannote
model into this module's state dict (a file `torch.load(weights_only=True)` reads anywhere);
`from_pyannote` does both at once.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16_000
# (kernel, stride) of every SincNet stage: sinc conv, pool, conv, pool, conv, pool.
LAYERS = ((251, 10), (3, 3), (5, 1), (3, 3), (5, 1), (3, 3))
# Powerset classes of 3 local speakers, at most 2 at once: which speakers each one means.
POWERSET = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))


def receptive_field(frames: int = 1) -> int:
    """Input samples that `frames` consecutive output frames see."""
    size = frames
    for kernel, stride in reversed(LAYERS):
        size = (size - 1) * stride + kernel
    return size


def frame_geometry() -> tuple[float, float, float]:
    """(start, step, duration) in seconds of output frame 0, as pyannote's receptive_field."""
    size = receptive_field(1)
    step = receptive_field(2) - size
    centre = (size - 1) / 2
    return (centre - (size - 1) / 2) / SAMPLE_RATE, step / SAMPLE_RATE, size / SAMPLE_RATE


def powerset_mapping() -> torch.Tensor:
    """(7, 3) float matrix: row c has a 1 for each speaker powerset class c holds."""
    mapping = torch.zeros(len(POWERSET), 3)
    for c, speakers in enumerate(POWERSET):
        mapping[c, list(speakers)] = 1.0
    return mapping


class SegmentationNet(nn.Module):
    """(batch, 1, samples) 16 kHz audio -> (batch, frames, 7) powerset log-probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.wav_norm = nn.InstanceNorm1d(1, affine=True)
        self.register_buffer("sinc", torch.zeros(80, 1, LAYERS[0][0]))
        self.conv = nn.ModuleList([nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)])
        self.norm = nn.ModuleList([nn.InstanceNorm1d(n, affine=True) for n in (80, 60, 60)])
        self.lstm = nn.LSTM(60, 128, num_layers=4, bidirectional=True, batch_first=True)
        self.linear = nn.ModuleList([nn.Linear(256, 128), nn.Linear(128, 128)])
        self.classifier = nn.Linear(128, len(POWERSET))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = self.wav_norm(waveforms)
        x = torch.abs(F.conv1d(x, self.sinc, stride=LAYERS[0][1]))
        x = F.leaky_relu(self.norm[0](F.max_pool1d(x, 3, 3)))
        for conv, norm in zip(self.conv, self.norm[1:], strict=True):
            x = F.leaky_relu(norm(F.max_pool1d(conv(x), 3, 3)))
        x, _ = self.lstm(x.transpose(1, 2))
        for linear in self.linear:
            x = F.leaky_relu(linear(x))
        return F.log_softmax(self.classifier(x), dim=-1)


def export_state(model) -> dict[str, torch.Tensor]:
    """This module's state dict from a loaded pyannote PyanNet (segmentation-3.0)."""
    sincnet = model.sincnet
    with torch.no_grad():
        sinc = sincnet.conv1d[0].filterbank.filters().detach().clone()
    state = {
        "wav_norm.weight": sincnet.wav_norm1d.weight,
        "wav_norm.bias": sincnet.wav_norm1d.bias,
        "sinc": sinc,
    }
    for i in (1, 2):
        state[f"conv.{i - 1}.weight"] = sincnet.conv1d[i].weight
        state[f"conv.{i - 1}.bias"] = sincnet.conv1d[i].bias
    for i in range(3):
        state[f"norm.{i}.weight"] = sincnet.norm1d[i].weight
        state[f"norm.{i}.bias"] = sincnet.norm1d[i].bias
    state |= {f"lstm.{k}": v for k, v in model.lstm.state_dict().items()}
    for i in range(2):
        state[f"linear.{i}.weight"] = model.linear[i].weight
        state[f"linear.{i}.bias"] = model.linear[i].bias
    state["classifier.weight"] = model.classifier.weight
    state["classifier.bias"] = model.classifier.bias
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def from_state(state: dict[str, torch.Tensor]) -> SegmentationNet:
    net = SegmentationNet()
    net.load_state_dict(state, strict=True)
    return net.eval()


def from_pyannote(path: str | Path) -> SegmentationNet:
    """Load a pyannote segmentation-3.0 checkpoint (needs pyannote.audio) as this module."""
    from deployments.models.quiet import silence_torchcodec_warning

    silence_torchcodec_warning()
    from pyannote.audio import Model

    model = Model.from_pretrained(Path(path).expanduser())
    if model is None:
        raise FileNotFoundError(f"cannot load segmentation model {path}")
    return from_state(export_state(model))


def load(path: str | Path) -> SegmentationNet:
    """A state dict of this module (`.pt`, torch alone) or a pyannote checkpoint."""
    path = Path(path).expanduser()
    if path.suffix == ".pt":
        return from_state(torch.load(path, map_location="cpu", weights_only=True))
    return from_pyannote(path)
