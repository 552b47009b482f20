"""The /v1/realtime socket in process (Starlette's test client), with fake replicas: keys,
the per-key session cap, bad messages and a manually committed turn. Real voices through the
deployed app: tests/test_realtime_e2e.py."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_app.app import api
from tests.api_fakes import FakeTranscriber, fake_services

URL = "/v1/realtime?intent=transcription"


@pytest.fixture()
def socket_client(redis_server, tmp_path):
    api.state.services = fake_services(
        redis_server, tmp_path, api_keys=[SecretStr("key-a")], realtime_sessions_per_key=1
    )
    yield TestClient(api)
    api.state.services = None


def _refusal(ws) -> tuple[str, int]:
    event = ws.receive_json()
    assert event["type"] == "error"
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return event["error"]["code"], closed.value.code


def test_a_key_is_required_and_each_key_has_its_cap(socket_client):
    with socket_client.websocket_connect(URL) as ws:
        assert _refusal(ws) == ("missing_api_key", 1008)
    with socket_client.websocket_connect(URL, headers={"Authorization": "Bearer nope"}) as ws:
        assert _refusal(ws) == ("invalid_api_key", 1008)
    browser = ["realtime", "openai-insecure-api-key.key-a"]
    with socket_client.websocket_connect(URL, subprotocols=browser) as ws:
        assert ws.accepted_subprotocol == "realtime"
        assert ws.receive_json()["type"] == "session.created"
        with socket_client.websocket_connect(URL, headers={"X-API-Key": "key-a"}) as second:
            assert _refusal(second) == ("too_many_sessions", 1013)
    with socket_client.websocket_connect(
        "/v1/realtime?intent=conversation", subprotocols=browser
    ) as ws:
        assert _refusal(ws) == ("invalid_intent", 1008)


def test_bad_messages_get_errors_and_a_committed_turn_its_transcript(socket_client):
    auth = {"Authorization": "Bearer key-a"}
    with socket_client.websocket_connect(URL, headers=auth) as ws:
        assert ws.receive_json()["type"] == "session.created"
        ws.send_text("{not json")
        assert ws.receive_json()["error"]["code"] == "invalid_json"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["error"]["code"] == "invalid_json"
        manual = {"turn_detection": None, "transcription": {"diarize": False, "model": "nope"}}
        ws.send_json({"type": "session.update", "session": {"audio": {"input": manual}}})
        error = ws.receive_json()["error"]
        assert error["code"] == "invalid_model" and "Traceback" not in error["message"]
        ws.send_json({"type": "session.update", "session": {"audio": {"input": {
            "turn_detection": None, "transcription": {"diarize": False}}}}})  # fmt: skip
        updated = ws.receive_json()
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        second = base64.b64encode(bytes(48000)).decode()  # 1 s of 24 kHz silence
        ws.send_json({"type": "input_audio_buffer.append", "audio": second})
        ws.send_json({"type": "input_audio_buffer.commit"})
        kinds = []
        while not kinds or kinds[-1] != "conversation.item.input_audio_transcription.completed":
            event = ws.receive_json()
            kinds.append(event["type"])
        assert kinds == [
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed",
        ]
        assert event["transcript"] == FakeTranscriber.TEXT
        assert event["usage"] == {"type": "duration", "seconds": 1.0}
