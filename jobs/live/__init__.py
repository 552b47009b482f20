"""Transcription while the caller waits on an open connection: `stream=true` windows."""
