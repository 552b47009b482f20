"""Model replicas and what they are built from, one way down:

- replicas/: the Ray Serve deployments (Transcriber, Diarizer) and replica placement;
- models/: model code (CTranslate2 Whisper, pyannote segmentation, CAM++), no Ray;
- core/: model-free libraries every layer uses (schemas, audio decoding, splitting,
  clustering maths, window languages): no Ray, no FastAPI, no model weights.
"""
