"""`manage.py pipeline_version import --alertmanager ...`: an Alertmanager configuration becomes a pipeline version."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from incidents import services
from incidents.models import PipelineVersion
from replays.engine import spec_hash
from replays.engine.alertmanager import import_alertmanager
from traceflux.audit import SYSTEM
from traceflux.audit.models import AuditEvent

CONFIG = """\
route:
  receiver: oncall
  group_by: [alertname, pop]
  routes:
    - receiver: network
      matchers: ['alertname=~"BGP.*"']
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [pop]
receivers:
  - name: oncall
  - name: network
"""

SILENCES = [
    {
        "id": "8c0f3e4e-0000-4000-8000-00000000000a",
        "matchers": [{"name": "pop", "value": "ams.*", "isRegex": True, "isEqual": True}],
        "startsAt": "2026-02-26T14:00:00Z",
        "endsAt": "2026-02-26T18:00:00Z",
        "createdBy": "oncall",
        "comment": "fibre cut",
        "status": {"state": "active"},
    }
]


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("pipeline_version", *args, stdout=out)
    return out.getvalue().rstrip("\n").splitlines()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def silences_file(tmp_path):
    path = tmp_path / "silences.json"
    path.write_text(json.dumps(SILENCES), encoding="utf-8")
    return path


@pytest.mark.django_db
def test_it_imports_a_configuration_as_a_pipeline_version_audited_as_the_cli(config_file, silences_file):
    lines = run("import", "--alertmanager", str(config_file), "--label", "am-1", "--silences", str(silences_file))
    version = PipelineVersion.objects.get(label="am-1")
    assert version.spec == import_alertmanager(CONFIG, silences=SILENCES)
    assert version.spec_hash == spec_hash(version.spec)
    assert lines == [
        f"Created pipeline version am-1 from {config_file}: 1 inhibit rule(s), 1 silence(s).",
        version.spec_hash,
    ]
    event = AuditEvent.objects.get(action="pipeline_version.created")
    assert (event.actor_kind, event.actor_name) == ("system", "cli")
    assert event.data["spec_hash"] == version.spec_hash


@pytest.mark.django_db
def test_it_records_the_parent_and_the_notes(config_file):
    parent = services.pipeline_version_create(label="v1", spec={"schema": "traceflux.policy/v1"}, actor=SYSTEM)
    lines = run("import", "--alertmanager", str(config_file), "--label", "v2", "--parent", "v1", "--notes", "from AM")
    version = PipelineVersion.objects.get(label="v2")
    assert (version.parent, version.notes) == (parent, "from AM")
    assert lines[0].endswith("0 silence(s), parent v1.")


@pytest.mark.django_db
def test_it_takes_one_silence_object_as_alertmanagers_post_body(config_file, tmp_path):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(SILENCES[0]), encoding="utf-8")
    run("import", "--alertmanager", str(config_file), "--label", "am-1", "--silences", str(single))
    assert len(PipelineVersion.objects.get().spec["suppression"]["silences"]) == 1


@pytest.mark.django_db
def test_it_names_the_yaml_path_of_a_bad_configuration(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(CONFIG.replace('alertname=~"BGP.*"', 'alertname=~"BGP'), encoding="utf-8")
    with pytest.raises(CommandError) as caught:
        run("import", "--alertmanager", str(bad), "--label", "am-1")
    assert str(caught.value) == (
        f'{bad}: route.routes[0].matchers[0]: matcher value contains unescaped double quote: "BGP'
    )
    assert not PipelineVersion.objects.exists()


@pytest.mark.django_db
def test_it_names_the_silences_file_for_a_bad_silence(config_file, tmp_path):
    bad = tmp_path / "silences.json"
    bad.write_text(json.dumps([{**SILENCES[0], "endsAt": "2026-02-26T13:00:00Z"}]), encoding="utf-8")
    with pytest.raises(CommandError, match=r"silences\.json: silences\[0\]\.endsAt: a silence must end after it"):
        run("import", "--alertmanager", str(config_file), "--label", "am-1", "--silences", str(bad))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1,", r"silences\.json: line 1, column 4: not JSON"),
        ('"a silence"', r"silences\.json: must be a JSON list of Alertmanager silences"),
    ],
)
def test_it_refuses_a_silences_file_that_is_not_a_list_of_silences(config_file, tmp_path, content, message):
    bad = tmp_path / "silences.json"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=message):
        run("import", "--alertmanager", str(config_file), "--label", "am-1", "--silences", str(bad))


@pytest.mark.django_db
def test_it_names_a_missing_file_an_unknown_parent_and_a_bad_label(config_file, tmp_path):
    with pytest.raises(CommandError, match=r"--alertmanager .*nowhere\.yml: no such file"):
        run("import", "--alertmanager", str(tmp_path / "nowhere.yml"), "--label", "am-1")
    with pytest.raises(CommandError, match=r"--parent 'v0': no pipeline version has that label"):
        run("import", "--alertmanager", str(config_file), "--label", "am-1", "--parent", "v0")
    with pytest.raises(CommandError, match=r"a label needs 1 to 50 characters"):
        run("import", "--alertmanager", str(config_file), "--label", "x" * 51)
    assert not PipelineVersion.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_taken_label_and_a_configuration_imported_before(config_file):
    run("import", "--alertmanager", str(config_file), "--label", "am-1")
    with pytest.raises(CommandError, match="label: pipeline version 'am-1' already exists"):
        run("import", "--alertmanager", str(config_file), "--label", "am-1")
    with pytest.raises(CommandError, match="spec: this spec is already pipeline version am-1"):
        run("import", "--alertmanager", str(config_file), "--label", "am-2")
    assert PipelineVersion.objects.count() == 1
