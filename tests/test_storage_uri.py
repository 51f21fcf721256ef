"""--storage URIs: a query string (how MinIO and other S3-compatible stores are reached) survives every
path built under it, and no secret of a URI is written to run.json or a message."""

from __future__ import annotations

import pytest

from search import run
from search import storage as trial_storage
from search.config import UserError

MINIO = "s3://bucket/runs/?endpoint_override=localhost:9000&scheme=http"


def test_paths_under_a_uri_keep_its_query_at_the_end():
    base = trial_storage.location(MINIO)
    assert base == "s3://bucket/runs?endpoint_override=localhost:9000&scheme=http"
    assert trial_storage.join(base, "shapes-r-0123abcd", "diverged") == (
        "s3://bucket/runs/shapes-r-0123abcd/diverged?endpoint_override=localhost:9000&scheme=http")
    assert trial_storage.join("/shared/ray", "shapes-r") == "/shared/ray/shapes-r"


@pytest.mark.parametrize("uri, shown", [
    ("s3://KEYID:TOPSECRET@bucket/p", "s3://KEYID:***@bucket/p"),
    ("s3://b/p?endpoint_override=h:9000&secret_key=TOPSECRET&access_key=TOPSECRET",
     "s3://b/p?endpoint_override=h:9000&secret_key=***&access_key=***"),
    ("gs://b/p?access_token=TOPSECRET&session_token=TOPSECRET", "gs://b/p?access_token=***&session_token=***"),
    ("https://u:TOPSECRET@host/p?password=TOPSECRET", "https://u:***@host/p?password=***"),
    ("/shared/ray", "/shared/ray"),
    (MINIO, MINIO),
])
def test_secrets_of_a_uri_are_redacted_and_the_rest_kept(uri, shown):
    assert trial_storage.redact(uri) == shown
    assert trial_storage.redact(f"python -m search.run shapes --storage {uri} --name r") == (
        f"python -m search.run shapes --storage {shown} --name r")


def test_a_storage_that_cannot_be_opened_names_it_without_its_secret():
    with pytest.raises(UserError) as error:
        trial_storage.check("nosuch://KEYID:TOPSECRET@bucket/p?secret_key=TOPSECRET")
    assert "TOPSECRET" not in str(error.value) and "nosuch://KEYID:***@bucket/p?secret_key=***" in str(error.value)


def test_a_resume_needs_a_uri_with_credentials_typed_again_and_the_same(tmp_path):
    recorded = "s3://KEYID:***@bucket/p"
    with pytest.raises(UserError, match="carries credentials"):
        run.check_storage_again(recorded, None, tmp_path)
    assert run.check_storage_again(recorded, "s3://KEYID:s3cret@bucket/p", tmp_path) == "s3://KEYID:s3cret@bucket/p"
    with pytest.raises(UserError, match="with the storage it started with"):
        run.check_storage_again(recorded, "s3://KEYID:s3cret@other/p", tmp_path)
    assert run.check_storage_again("/shared/ray", None, tmp_path) == "/shared/ray"
    with pytest.raises(UserError, match="with the storage it started with"):
        run.check_storage_again("/shared/ray", str(tmp_path / "elsewhere"), tmp_path)
