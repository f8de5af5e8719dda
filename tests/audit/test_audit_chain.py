from __future__ import annotations

import threading

import pytest
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from tests.audit.tamper import command_output, raw_sql
from traceflux import audit
from traceflux.audit.models import AuditEvent, AuditLogImmutable
from traceflux.audit.services import audit_verify


def _events(n: int, **extra) -> list[AuditEvent]:
    return [audit.record(action="test.event", data={"i": i, "note": "ü ✓"}, **extra) for i in range(n)]


@pytest.mark.django_db
def test_it_verifies_a_clean_chain_and_prints_the_count(admin_user):
    _events(5, actor=admin_user)
    assert command_output("audit_verify").startswith("audit chain intact: 5 events; no anchor in ")


@pytest.mark.django_db
def test_it_verifies_an_empty_chain():
    assert command_output("audit_verify").startswith("audit chain intact: 0 events; no anchor in ")


@pytest.mark.django_db
def test_it_links_each_event_to_the_one_before(admin_user):
    first, second = _events(2, actor=admin_user)
    assert second.prev_hash == first.hash
    assert (first.actor_kind, first.actor_name, first.actor_id) == ("user", "admin", str(admin_user.pk))


@pytest.mark.django_db
def test_it_names_the_seq_of_a_row_changed_by_raw_sql():
    _events(5)
    raw_sql("UPDATE audit_auditevent SET reason = %s WHERE seq = 3", ["nothing to see"])
    with pytest.raises(CommandError, match="audit chain broken at seq 3: content does not match its hash") as caught:
        command_output("audit_verify")
    assert caught.value.returncode == 1


@pytest.mark.django_db
def test_it_names_the_seq_of_a_deleted_row():
    _events(5)
    raw_sql("DELETE FROM audit_auditevent WHERE seq = 2")
    with pytest.raises(CommandError, match="audit chain broken at seq 2: seq 2 is missing"):
        command_output("audit_verify")


@pytest.mark.django_db
def test_it_notices_the_newest_rows_cut_off():
    _events(4)
    raw_sql("DELETE FROM audit_auditevent WHERE seq = 4")
    result = audit_verify()
    assert (result.ok, result.broken_seq) == (False, 4)


@pytest.mark.django_db
def test_it_names_the_first_of_two_swapped_rows():
    _events(5)
    # Reorder history: the rows stay intact, but 2 and 4 trade places in the sequence.
    for old, new in ((2, 1_000_000), (4, 2), (1_000_000, 4)):
        raw_sql("UPDATE audit_auditevent SET seq = %s WHERE seq = %s", [new, old])
    with pytest.raises(CommandError, match="broken at seq 2"):
        command_output("audit_verify")


@pytest.mark.django_db
def test_it_refuses_update_and_delete_through_the_orm():
    (event,) = _events(1)
    with pytest.raises(AuditLogImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(reason="x")
    with pytest.raises(AuditLogImmutable):
        AuditEvent.objects.all().delete()
    with pytest.raises(AuditLogImmutable):
        event.delete()
    event.reason = "changed"
    with pytest.raises(AuditLogImmutable):
        event.save()
    assert audit_verify().ok


@pytest.mark.django_db
def test_it_leaves_no_event_when_the_change_it_records_rolls_back():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record(action="test.event")
        raise RuntimeError("the change failed")
    assert not AuditEvent.objects.exists()
    _events(1)
    assert AuditEvent.objects.get().seq == 1
    assert audit_verify().ok


@pytest.mark.needs("postgresql")
@pytest.mark.django_db
def test_it_has_the_database_trigger_block_update_and_delete():
    _events(2)
    for sql in ("UPDATE audit_auditevent SET reason = 'x' WHERE seq = 1", "DELETE FROM audit_auditevent WHERE seq = 2"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert audit_verify().ok
    assert AuditEvent.objects.count() == 2


@pytest.mark.needs("postgresql")
@pytest.mark.django_db(transaction=True)
def test_it_keeps_one_unbroken_chain_under_eight_concurrent_writers():
    barrier = threading.Barrier(8)
    errors: list[Exception] = []

    def writer(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(50):
                with transaction.atomic():
                    audit.record(action="test.concurrent", data={"writer": n, "i": i})
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    result = audit_verify()
    assert (result.ok, result.count) == (True, 400), result
    assert sorted(AuditEvent.objects.values_list("seq", flat=True)) == list(range(1, 401))


@pytest.mark.django_db
def test_it_shows_staff_only_the_audit_events_of_their_environments(client, operator, outsider, environments):
    from django.contrib.auth.models import Permission
    from django.urls import reverse

    audit.record(action="test.prod", environment="prod")
    audit.record(action="test.global")
    view = Permission.objects.get(codename="view_auditevent")
    for user in (operator, outsider):
        user.user_permissions.add(view)
    client.force_login(operator)
    page = client.get(reverse("admin:audit_auditevent_changelist")).content.decode()
    assert "test.prod" in page and "test.global" not in page
    client.force_login(outsider)
    page = client.get(reverse("admin:audit_auditevent_changelist")).content.decode()
    assert "test.prod" not in page
