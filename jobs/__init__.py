"""The job manager and everything a job needs below the HTTP layer:

- pipeline/: the JobManager deployment and the steps of a job (JobPipeline, language pass);
- state/: what lives in Redis and on disk (job store and its Lua scripts, records, audio
  files, enrolled speakers, the webhook outbox, the embedded Redis server);
- stitching/: model-free maths that turns segment results into one transcript (stitching,
  speaker linking, languages, voiceprint matching, the streamed result writer);
- live/: streamed transcription, window by window on the same replicas (`stream=true`);
- integrations/: what talks to the outside (webhook delivery, Prometheus metrics).
"""
