"""The bundled diarizer's model code, one module per role.

- pyannet.py: segmentation-3.0's network in plain torch (pyannote.audio only loads its file);
- segmentation.py: that network over sliding 10 s windows, of many segments at once;
- fbank.py: Kaldi filterbank features in plain torch, on the model's device;
- embedding.py: CAM++ speaker embeddings;
- pieces.py: local speakers -> tracks -> speech pieces, and reconstruction of global turns;
- pipeline.py: `SpeakerDiarizer`, wiring the above with the model-free clustering
  (deployments/core/clustering.py, which the job manager also uses for whole recordings).
"""
