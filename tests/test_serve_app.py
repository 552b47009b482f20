"""The deployed app over real HTTP: a local Ray cluster, real replicas, real weights."""

import pytest

from tests.conftest import JFK, JFK_TEXT, TEST_MAX_UPLOAD_MB, wer

pytestmark = [pytest.mark.ray, pytest.mark.models]


def _transcribe(http, content: bytes, name="audio.flac", **form):
    return http.post(
        "/v1/audio/transcriptions",
        files={"file": (name, content)},
        data={"model": "whisper-1", **form},
    )


def test_healthz_reports_models(http):
    body = http.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["transcriber"] == "tiny.en" and body["device"] == "cpu"
    assert body["models"] == ["tiny.en", "base"]


def test_openai_text_format_prints_the_sentence(http):
    r = _transcribe(http, JFK.read_bytes(), response_format="text")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert wer(JFK_TEXT, r.text) <= 0.05, r.text


def test_openai_json_format(http):
    r = _transcribe(http, JFK.read_bytes(), response_format="json")
    assert r.status_code == 200
    assert wer(JFK_TEXT, r.json()["text"]) <= 0.05


def test_models_lists_whisper_1(http):
    ids = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert "whisper-1" in ids and "tiny.en" in ids


@pytest.mark.parametrize(
    ("content", "name", "code"),
    [
        (b"just some text, not audio\n" * 10, "notes.txt", "unsupported_media"),
        (b"", "empty.wav", "empty_file"),
        (bytes(range(256)) * 40, "noise.wav", "unsupported_media"),
    ],
    ids=["text", "empty", "random-bytes"],
)
def test_non_audio_gets_400_with_json_error(http, content, name, code):
    r = _transcribe(http, content, name=name)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == code
    assert "file" in r.json()["error"]["message"]


def test_bad_parameters_get_400_naming_them_as_openai_does(http):
    for form, param in (
        ({"response_format": "docx"}, "response_format"),
        ({"temperature": "hot"}, "temperature"),
    ):
        r = _transcribe(http, JFK.read_bytes(), **form)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error", error
        assert param in error["message"]


def test_unknown_model_gets_400(http):
    r = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.flac", JFK.read_bytes())},
        data={"model": "gpt-9"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model"
    assert r.json()["error"]["param"] == "model"


def test_missing_file_gets_400(http):
    r = http.post("/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text


def test_oversize_upload_gets_413_and_server_keeps_serving(http):
    big = b"\0" * int((TEST_MAX_UPLOAD_MB + 1) * 1e6)
    r = _transcribe(http, big, name="big.wav")
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    assert http.get("/healthz").status_code == 200
    assert _transcribe(http, JFK.read_bytes(), response_format="text").status_code == 200


def test_unknown_route_uses_the_error_shape(http):
    r = http.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
