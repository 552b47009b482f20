"""CAM++ speaker embeddings (3D-Speaker; Wang et al., "CAM++: A Fast and Efficient Network for
Speaker Verification Using Context-Aware Masking", Interspeech 2023).

Weights: `campplus_cn_en_common.pt` (3D-Speaker's zh+en "common advanced" model, 192-d), a plain
state dict of 937 tensors that this architecture loads with `strict=True`.

Features, as the model was trained: 16 kHz audio scaled to the int16 range, 80-bin Kaldi
log-mel filterbank (25 ms window, 10 ms shift, no dither), mean-normalised over the utterance.
The network: a 2-D convolutional front end (FCM: two residual stages that halve the frequency
axis) turns the 80 bins into 32 x 10 channels, then a densely connected TDNN with
context-aware masking (blocks of 12, 24 and 16 layers, growth 32) and statistics pooling.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deployments.models.diarization.fbank import fbank

SAMPLE_RATE = 16_000
FEAT_DIM = 80
EMBEDDING_DIM = 192
FRAME_SHIFT_S = 0.01
MIN_SAMPLES = 400  # one 25 ms fbank frame
# Pieces are padded by at most this ratio (by repeating themselves) to share forward passes.
LENGTH_STEP = 1.1
_LADDER = sorted({math.ceil(LENGTH_STEP**k) for k in range(200)})  # up to ~5e8 frames


def _nonlinear(config: str, channels: int) -> nn.Sequential:
    layers = nn.Sequential()
    for name in config.split("-"):
        if name == "relu":
            layers.add_module("relu", nn.ReLU(inplace=True))
        elif name == "batchnorm":
            layers.add_module("batchnorm", nn.BatchNorm1d(channels))
        elif name == "batchnorm_":
            layers.add_module("batchnorm", nn.BatchNorm1d(channels, affine=False))
        else:
            raise ValueError(f"unknown nonlinearity {name!r}")
    return layers


class _ResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _FCM(nn.Module):
    """2-D conv front end: (batch, 80, T) -> (batch, 32 * 10, T)."""

    def __init__(self, channels: int = 32, feat_dim: int = FEAT_DIM) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(
            _ResBlock(channels, channels, 2), _ResBlock(channels, channels, 1)
        )
        self.layer2 = nn.Sequential(
            _ResBlock(channels, channels, 2), _ResBlock(channels, channels, 1)
        )
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


class _TDNN(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(
            in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False
        )
        self.nonlinear = _nonlinear("batchnorm-relu", out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class _CAM(nn.Module):
    """Context-aware masking: a local TDNN output gated by utterance- and segment-level means."""

    SEGMENT = 100  # frames per pooled segment

    def __init__(self, bn_ch: int, out_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        padding = (kernel - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            bn_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(bn_ch, bn_ch // 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(bn_ch // 2, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seg = F.avg_pool1d(x, self.SEGMENT, self.SEGMENT, ceil_mode=True)
        seg = seg.repeat_interleave(self.SEGMENT, dim=-1)[..., : x.shape[-1]]
        context = self.relu(self.linear1(x.mean(-1, keepdim=True) + seg))
        return self.linear_local(x) * torch.sigmoid(self.linear2(context))


class _DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bn_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _nonlinear("batchnorm-relu", in_ch)
        self.linear1 = nn.Conv1d(in_ch, bn_ch, 1, bias=False)
        self.nonlinear2 = _nonlinear("batchnorm-relu", bn_ch)
        self.cam_layer = _CAM(bn_ch, growth, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _DenseBlock(nn.ModuleList):
    def __init__(self, layers: int, in_ch: int, growth: int, bn_ch: int, dilation: int) -> None:
        super().__init__()
        for i in range(layers):
            layer = _DenseLayer(in_ch + i * growth, growth, bn_ch, 3, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.nonlinear = _nonlinear("batchnorm-relu", in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class _Dense(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = _nonlinear("batchnorm_", out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """CAM++ network: (batch, frames, 80) fbank -> (batch, 192) embedding."""

    def __init__(self, embedding_size: int = EMBEDDING_DIM, growth: int = 32) -> None:
        super().__init__()
        self.head = _FCM()
        channels, init = self.head.out_channels, 128
        self.xvector = nn.Sequential(OrderedDict([("tdnn", _TDNN(channels, init, 5, stride=2))]))
        channels = init
        for i, (layers, dilation) in enumerate(zip((12, 24, 16), (1, 2, 2), strict=True)):
            block = _DenseBlock(layers, channels, growth, 4 * growth, dilation)
            self.xvector.add_module(f"block{i + 1}", block)
            channels += layers * growth
            self.xvector.add_module(f"transit{i + 1}", _Transit(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _nonlinear("batchnorm-relu", channels))
        self.xvector.add_module("stats", _StatsPool())
        self.xvector.add_module("dense", _Dense(channels * 2, embedding_size))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(fbank.permute(0, 2, 1)))


def load_campplus(path: str | Path, device: str | torch.device = "cpu") -> CAMPPlus:
    """Build CAM++ and load the published state dict strictly (every tensor must match)."""
    state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    model = CAMPPlus()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


class SpeakerEmbedder:
    """Unit-length CAM++ embeddings of pieces of 16 kHz mono audio, batched by length.

    Args:
        path: the CAM++ state dict.
        device: torch device.
        batch_frames: padded fbank frames per forward pass (bounds memory).
        half: run the network in float16 (features and the result stay float32).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        batch_frames: int = 12_000,
        half: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.model = load_campplus(path, self.device).to(self.dtype)
        self.batch_frames = batch_frames

    def fbank(self, audio: np.ndarray) -> torch.Tensor:
        """(frames, 80) mean-normalised Kaldi fbank of float audio in [-1, 1]."""
        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        feats = fbank(wave * 32768.0, FEAT_DIM)  # on the model's device
        return feats - feats.mean(dim=0, keepdim=True)

    def __call__(self, pieces: list[np.ndarray]) -> np.ndarray:
        """Embed each piece of audio (each at least MIN_SAMPLES long).

        Each piece is padded to the next length on a ladder (repeating itself, which keeps
        its statistics; zero padding would not), and pieces of one padded length share a
        forward pass. The padding depends on the piece alone, so its embedding does not
        depend on which pieces, of this segment or of others, share its batch.
        """
        out = np.zeros((len(pieces), EMBEDDING_DIM), dtype=np.float32)
        if not pieces:
            return out
        feats = [self.fbank(p) for p in pieces]
        by_length: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            by_length.setdefault(padded_length(len(f)), []).append(i)
        for frames, members in sorted(by_length.items()):
            per_pass = max(1, self.batch_frames // frames)
            for b in range(0, len(members), per_pass):
                batch = members[b : b + per_pass]
                padded = torch.stack([_repeat_to(feats[j], frames) for j in batch])
                with torch.inference_mode():
                    emb = self.model(padded.to(self.device, self.dtype))
                    out[batch] = emb.float().cpu().numpy()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


def padded_length(frames: int) -> int:
    """The smallest length on a ladder of ratio LENGTH_STEP that holds `frames`."""
    i = bisect.bisect_left(_LADDER, frames)
    return _LADDER[i] if i < len(_LADDER) else frames


def _repeat_to(feats: torch.Tensor, frames: int) -> torch.Tensor:
    if len(feats) >= frames:
        return feats[:frames]
    reps = -(-frames // len(feats))
    return feats.repeat(reps, 1)[:frames]
