import pytest

from gateway import versions
from gateway.errors import DockerError


def test_in_range_passes():
    versions.check("1.41", "1.41", "1.12")
    versions.check("1.24", "1.41", "1.12")


def test_too_new_is_dockerds_400_json():
    with pytest.raises(DockerError) as exc:
        versions.check("1.45", "1.41", "1.12")
    assert exc.value.status == 400
    assert exc.value.message == "client version 1.45 is too new. Maximum supported API version is 1.41"
    assert (
        exc.value.body()
        == b'{"message":"client version 1.45 is too new. Maximum supported API version is 1.41"}\n'
    )


def test_too_old_is_dockerds_400_text():
    with pytest.raises(DockerError) as exc:
        versions.check("1.11", "1.41", "1.12")
    assert exc.value.status == 400
    assert exc.value.content_type.startswith("text/plain")
    assert exc.value.body() == (
        b"client version 1.11 is too old. Minimum supported API version is 1.12, "
        b"please upgrade your client to a newer version\n"
    )


def test_versions_compare_numerically_not_as_strings():
    assert versions.lowest(["1.9", "1.41"], "1.41") == "1.9"
    assert versions.highest(["1.12", "1.9"], "1.12") == "1.12"
    versions.check("1.100", "1.100", "1.12")
