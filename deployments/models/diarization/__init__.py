"""The bundled diarizer's model code, one module per role.

- segmentation.py: pyannote/segmentation-3.0 over sliding 10 s windows;
- embedding.py: CAM++ speaker embeddings;
- pieces.py: local speakers -> tracks -> speech pieces, and reconstruction of global turns;
- pipeline.py: `SpeakerDiarizer`, wiring the above with the model-free clustering
  (deployments/core/clustering.py, which the job manager also uses for whole recordings).
"""
