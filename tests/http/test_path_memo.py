"""The memo in front of path normalisation: same answers, bounded size, errors not cached."""

from __future__ import annotations

import pytest

from portway.errors import BadRequestError
from portway.http import path as pathmod
from portway.http.path import normalize, normalize_path


def test_memo_gives_the_same_answers_as_the_checks() -> None:
    for raw in (b"/a/./b/../c", b"/x%7Ey", b"/p//q/", b"/plain", b"/%2F"):
        first = normalize_path(raw, allow_encoded_slashes=True)
        again = normalize_path(raw, allow_encoded_slashes=True)
        assert first == again == normalize(raw, allow_encoded_slashes=True)


def test_memo_is_per_encoded_slash_policy() -> None:
    assert normalize_path(b"/a%2Fb", allow_encoded_slashes=True) == "/a%2Fb"
    with pytest.raises(BadRequestError):
        normalize_path(b"/a%2Fb", allow_encoded_slashes=False)


def test_rejected_paths_are_rejected_every_time() -> None:
    for _ in range(2):
        with pytest.raises(BadRequestError):
            normalize_path(b"/a%00b", allow_encoded_slashes=True)


def test_memo_stays_bounded() -> None:
    for i in range(pathmod._MEMO_SIZE * 2 + 5):
        normalize_path(b"/items/%d" % i, allow_encoded_slashes=True)
    assert len(pathmod._MEMO_ENC) <= pathmod._MEMO_SIZE
    long_path = b"/" + b"a" * (pathmod._MEMO_MAX_LEN + 1)
    normalize_path(long_path, allow_encoded_slashes=True)
    assert long_path not in pathmod._MEMO_ENC
