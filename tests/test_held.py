"""serve_app/held.py alone: the caps on requests that hold the ingress (issue 22 item 2).
Through the real app: tests/test_hardening.py::test_followers_never_lock_out_health_..."""

import pytest

from serve_app.errors import ApiError
from serve_app.held import HeldRequests


def test_each_key_holds_its_share_and_all_keys_the_total():
    held = HeldRequests(total=3, per_key=2)
    held.acquire("a")
    held.acquire("a")
    with pytest.raises(ApiError) as err:
        held.acquire("a")
    assert err.value.status == 429 and err.value.headers["Retry-After"]
    held.acquire("b")
    with pytest.raises(ApiError) as err:
        held.acquire("c")  # within its own share, but the service is full
    assert err.value.status == 503 and err.value.code == "busy"
    held.release("a")
    held.acquire("c")
    assert held.held == 3 and dict(held.by_key) == {"a": 1, "b": 1, "c": 1}


def test_a_hold_is_released_however_the_request_ends():
    held = HeldRequests(total=1, per_key=1)
    with pytest.raises(RuntimeError), held.hold(None):
        raise RuntimeError("the stream broke")
    with held.hold(None):
        assert held.held == 1
    assert held.held == 0 and not held.by_key
