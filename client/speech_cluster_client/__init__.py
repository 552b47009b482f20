"""The `speech-cluster` command-line client: httpx and rich only, no Ray, torch or numpy."""
