"""The HTTP ingress: routers per API area over a shared service layer.

- routers/: jobs, OpenAI-compatible audio, speakers (routers never import each other);
- services/: what the routers share (the app's Services, job creation, speaker references);
- auth, errors, limits, rendering (output formats), settings, exposure, app (the builder).
"""
