"""Every nasty artifact of the corpus, posted through the real upload URL, gets a clear 4xx naming its problem, and
leaves no Artifact row, no stored file and no temporary file behind. Also: schema-valid manifests with awkward text
in every string field, through the same URL, never get a 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifacts.models import Artifact
from incidents import services as incident_services
from tests.artifacts.conftest import assert_nothing_stored, files_under, post_upload
from tests.factories import AgentFactory, EnvironmentFactory
from tests.fuzz.corpus import AGENT, CORPUS, ENVIRONMENT, Nasty, good_tar_gz, manifest
from tests.fuzz.strategies import AWKWARD_CHARACTERS
from tests.fuzz.support import FUZZ

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent_key(unlimited_rates) -> str:
    staging = EnvironmentFactory(slug=ENVIRONMENT)
    EnvironmentFactory(slug="prod")
    agent = AgentFactory(environment=staging, name=AGENT)
    _, plaintext = incident_services.agent_key_create(agent=agent, actor=None, scopes=["artifacts:write"])
    return plaintext


def test_it_stores_the_good_bundle_the_corpus_is_built_from(client, agent_key, media_root):
    response = post_upload(client, agent_key, good_tar_gz())

    assert response.status_code == 201, response.json()
    assert Artifact.objects.count() == 1


def test_it_keeps_the_bombs_small_on_disk():
    bombs = {nasty.name: len(nasty.build()) for nasty in CORPUS if "bomb" in nasty.name}
    assert bombs and all(size < 1024 * 1024 for size in bombs.values()), bombs


@pytest.mark.parametrize("nasty", CORPUS, ids=[nasty.name for nasty in CORPUS])
def test_it_refuses_each_nasty_artifact_naming_the_problem(client, agent_key, media_root, nasty: Nasty):
    response = post_upload(client, agent_key, nasty.build(), kind=nasty.kind, filename=nasty.name)

    assert response.status_code == nasty.status, response.content[:500]
    detail = response.json()["detail"]
    for words in nasty.mentions:
        assert words.lower() in detail.lower(), (words, detail)
    if nasty.field is not None:
        assert response.json()["field"] == nasty.field
    assert_nothing_stored(media_root)
    assert files_under(media_root) == []


STRING_FIELDS = [("incident", "ref"), ("incident", "title"), ("scope", "service"), ("scope", "region"),
                 ("scope", "pop"), ("agent",)]


@FUZZ
@given(path=st.sampled_from(STRING_FIELDS), text=st.tuples(
    st.text(max_size=8), st.sampled_from(AWKWARD_CHARACTERS), st.text(max_size=8)).map("".join),
    escaped=st.booleans())
def test_it_never_fails_on_awkward_text_in_a_manifest(client, agent_key, media_root, path, text, escaped):
    document = manifest()
    holder = document
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = text
    raw = json.dumps(document, ensure_ascii=escaped).encode("utf-8", "surrogatepass")

    response = post_upload(client, agent_key, good_tar_gz(**{"manifest.json": raw}))

    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400:
        assert response.json()["detail"].strip()
        assert not Artifact.objects.exists()
    Artifact.objects.all().delete()
