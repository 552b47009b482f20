"""Offline speaker diarization, one module per role.

- segmentation.py: pyannote/segmentation-3.0 over sliding 10 s windows;
- embedding.py: CAM++ speaker embeddings;
- pieces.py: local speakers -> tracks -> speech pieces, and reconstruction of global turns;
- clustering.py: pieces -> speakers (public: the job manager clusters all segments with it);
- pipeline.py: `SpeakerDiarizer`, wiring the above.

Heavy imports (torch, pyannote) stay inside the model modules, so importing the clustering API
from jobs/ is cheap.
"""
