"""Speakers of a live session: each turn's voice joins the running cluster it sounds like, or
founds a new one, so one person keeps one label for the whole session; clusters that match
an enrolled voice carry its name.

A turn's voice is the CAM++ embedding of its main voice (the Diarizer's `voiceprint`).
Clusters are speech-weighted centroids; a turn joins the closest one at LINK_THRESHOLD or
more (the diarizer's own merge threshold), else founds a new one. Turns with too little
speech for a trustworthy embedding take the closest cluster without moving it. After every
turn the clusters are matched one to one to the enrolled voices (voiceprints.assign, the
jobs' rule), so a cluster gains its name as soon as its centroid is close enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.stitching.voiceprints import ANONYMOUS, MATCH_THRESHOLD, KnownSpeaker, assign

LINK_THRESHOLD = 0.5  # cosine to a cluster's centroid (deployments.core.clustering.THRESHOLD)
MIN_VOICE_S = 1.0  # less speech than this: the embedding only picks among clusters
UNKNOWN = "unknown"


@dataclass
class _Cluster:
    label: str  # anonymous label, kept when a name is found
    total: np.ndarray  # speech-weighted sum of unit embeddings
    weight: float

    @property
    def centroid(self) -> np.ndarray:
        return self.total / (np.linalg.norm(self.total) or 1.0)


class SpeakerTracker:
    def __init__(self, known: list[KnownSpeaker] | None = None) -> None:
        self.known = list(known or [])
        self.clusters: list[_Cluster] = []
        self.names: dict[str, str] = {}  # anonymous label -> enrolled name
        self.last: str | None = None

    def label(self, embedding: list[float] | None, speech_s: float) -> str:
        """The speaker of a turn whose main voice is `embedding` with `speech_s` of speech."""
        if not embedding:
            return self._name(self.last) if self.last else UNKNOWN
        v = np.asarray(embedding, np.float64)
        v /= np.linalg.norm(v) or 1.0
        sims = [float(c.centroid @ v) for c in self.clusters]
        best = int(np.argmax(sims)) if sims else -1
        if speech_s < MIN_VOICE_S:
            if best < 0:
                return UNKNOWN
            self.last = self.clusters[best].label
            return self._name(self.last)
        if best >= 0 and sims[best] >= LINK_THRESHOLD:
            cluster = self.clusters[best]
            cluster.total = cluster.total + v * speech_s
            cluster.weight += speech_s
        else:
            cluster = _Cluster(ANONYMOUS.format(len(self.clusters)), v * speech_s, speech_s)
            self.clusters.append(cluster)
        self._match()
        self.last = cluster.label
        return self._name(cluster.label)

    def _match(self) -> None:
        if not self.known:
            return
        found = assign({c.label: c.centroid for c in self.clusters}, self.known, MATCH_THRESHOLD)
        self.names = {label: hit[0].name for label, hit in found.items()}

    def _name(self, label: str) -> str:
        return self.names.get(label, label)
