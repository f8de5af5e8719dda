"""Anchoring the chain outside the database: what the chain alone cannot see, the anchor does."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management.base import CommandError
from django.test import override_settings

from tests.audit.tamper import command_output, raw_sql
from traceflux import audit
from traceflux.audit import chain
from traceflux.audit.anchor import audit_anchor_write, read_latest_anchor
from traceflux.audit.models import AuditChainHead, AuditEvent
from traceflux.audit.services import audit_verify


def _events(n: int) -> list[AuditEvent]:
    return [audit.record(action="test.event", data={"i": i}) for i in range(n)]


def _cut_newest(keep: int) -> None:
    """Delete every event after `keep` and rewind the head row to match: invisible to the chain alone."""
    raw_sql("DELETE FROM audit_auditevent WHERE seq > %s", [keep])
    last = AuditEvent.objects.get(seq=keep)
    AuditChainHead.objects.filter(pk=1).update(seq=keep, hash=last.hash)


def _lines() -> list[bytes]:
    return settings.TRACEFLUX_AUDIT_ANCHOR_FILE.read_bytes().splitlines()


@pytest.mark.django_db
def test_it_detects_the_newest_rows_deleted_after_an_anchor():
    _events(5)
    assert command_output("audit_anchor").startswith("anchored #5 ")
    _cut_newest(keep=3)
    with override_settings(TRACEFLUX_AUDIT_ANCHOR_FILE=settings.TRACEFLUX_AUDIT_ANCHOR_FILE.with_name("none.jsonl")):
        assert audit_verify().ok, "the chain alone cannot see this cut: that is what the anchor is for"
    with pytest.raises(CommandError, match=r"audit chain broken at seq 4: seq 4 is missing: the anchor #5 of \S+ is "
                       r"beyond the log, which ends at #3") as caught:
        command_output("audit_verify")
    assert caught.value.returncode == 1


@pytest.mark.django_db
def test_it_detects_both_tables_emptied_after_an_anchor():
    _events(2)
    audit_anchor_write()
    raw_sql("DELETE FROM audit_auditevent")
    AuditChainHead.objects.filter(pk=1).update(seq=0, hash="")
    result = audit_verify()
    assert (result.ok, result.broken_seq, result.count) == (False, 1, 0)
    assert "the anchor #2 of" in result.problem


@pytest.mark.django_db
def test_it_detects_anchored_rows_replaced_by_new_events():
    _events(3)
    audit_anchor_write()
    _cut_newest(keep=1)
    _events(2)  # the application writes on: seq 2 and 3 again, validly chained, with other content
    with pytest.raises(CommandError, match=r"audit chain broken at seq 3: hash differs from the anchor #3 of \S+: "
                       r"the event was rewritten or replaced"):
        command_output("audit_verify")


@pytest.mark.django_db
def test_it_detects_an_anchored_row_rewritten_by_someone_holding_the_key():
    events = _events(3)
    audit_anchor_write()
    # Rewrite the newest event and re-hash it with the chain key: the chain alone checks out.
    fields = {name: getattr(events[2], name) for name in chain.HASHED_FIELDS} | {"reason": "nothing happened"}
    forged = chain.event_hash(events[1].hash, fields)
    raw_sql("UPDATE audit_auditevent SET reason = %s, hash = %s WHERE seq = 3", ["nothing happened", forged])
    AuditChainHead.objects.filter(pk=1).update(hash=forged)
    result = audit_verify()
    assert (result.ok, result.broken_seq) == (False, 3)
    assert result.problem.startswith("hash differs from the anchor #3 of ")


@pytest.mark.django_db
def test_it_passes_and_names_the_anchor_when_the_chain_extends_it():
    _events(3)
    anchor = audit_anchor_write()
    _events(2)
    assert command_output("audit_verify") == f"audit chain intact: 5 events; anchor #3 of {anchor.anchored_at} matches"


@pytest.mark.django_db
def test_it_reports_the_chain_break_first_and_leaves_the_anchor_unchecked():
    _events(4)
    audit_anchor_write()
    raw_sql("UPDATE audit_auditevent SET reason = %s WHERE seq = 2", ["edited"])
    result = audit_verify()
    assert (result.ok, result.broken_seq, result.problem) == (False, 2, "content does not match its hash")
    assert result.anchor.endswith("not checked")


@pytest.mark.django_db
def test_it_appends_one_json_line_per_anchor_and_never_rewrites_the_file():
    first = _events(2)[-1]
    audit_anchor_write()
    before = settings.TRACEFLUX_AUDIT_ANCHOR_FILE.read_bytes()
    second = _events(1)[-1]
    audit_anchor_write()
    after = settings.TRACEFLUX_AUDIT_ANCHOR_FILE.read_bytes()
    assert after.startswith(before) and after.endswith(b"\n")
    records = [json.loads(line) for line in _lines()]
    assert [(r["seq"], r["hash"]) for r in records] == [(2, first.hash), (3, second.hash)]
    assert all(set(r) == {"seq", "hash", "anchored_at"} for r in records)
    assert settings.TRACEFLUX_AUDIT_ANCHOR_FILE.stat().st_mode & 0o137 == 0  # at most rw-r-----


@pytest.mark.django_db
def test_it_has_the_beat_task_write_only_when_the_head_moved():
    from traceflux.tasks import anchor_audit_chain

    assert anchor_audit_chain.delay().get() is None  # an empty chain: nothing to anchor
    assert not settings.TRACEFLUX_AUDIT_ANCHOR_FILE.exists()
    _events(2)
    assert anchor_audit_chain.delay().get() == 2
    assert anchor_audit_chain.delay().get() is None
    _events(1)
    assert anchor_audit_chain.delay().get() == 3
    assert [json.loads(line)["seq"] for line in _lines()] == [2, 3]


@pytest.mark.django_db
def test_it_writes_one_now_from_the_command_even_when_the_head_did_not_move():
    assert command_output("audit_anchor") == "the audit chain is empty: nothing to anchor"
    _events(1)
    command_output("audit_anchor")
    out = command_output("audit_anchor")
    assert out.startswith("anchored #1 ") and str(settings.TRACEFLUX_AUDIT_ANCHOR_FILE) in out
    assert len(_lines()) == 2


@pytest.mark.django_db
def test_it_ignores_a_line_cut_short_and_starts_the_next_anchor_on_a_line_of_its_own():
    _events(1)
    audit_anchor_write()
    with settings.TRACEFLUX_AUDIT_ANCHOR_FILE.open("ab") as handle:
        handle.write(b'{"seq":9,"hash":"ab')  # a crash in the middle of a write
    assert read_latest_anchor().seq == 1
    _events(1)
    audit_anchor_write()
    assert read_latest_anchor().seq == 2
    assert json.loads(_lines()[-1])["seq"] == 2
    assert audit_verify().ok


def test_it_skips_lines_that_are_not_anchors_and_reads_the_latest_across_blocks(tmp_path):
    path = tmp_path / "anchors.jsonl"
    good = [json.dumps({"seq": n, "hash": f"{n:064x}", "anchored_at": "2026-03-01T10:00:00+00:00"}) for n in (1, 2)]
    bad = ["not json", '{"seq": "3", "hash": "x", "anchored_at": ""}', json.dumps({"seq": 4, "hash": "A" * 64})] * 150
    path.write_text("\n".join([*good, *bad, '{"seq": 5, "ha']), encoding="utf-8")  # > 8 KiB after the last good one
    assert path.stat().st_size > 8192 + len(good[0]) + len(good[1])
    assert read_latest_anchor(path).seq == 2
    assert read_latest_anchor(tmp_path / "missing.jsonl") is None


def test_it_schedules_the_anchor_task_every_minute():
    from traceflux.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["audit.anchor_chain"]
    assert entry["task"] == "traceflux.tasks.anchor_audit_chain"
    assert entry["schedule"] == timedelta(minutes=1)
    app.loader.import_default_modules()
    assert "traceflux.tasks.anchor_audit_chain" in app.tasks
