from __future__ import annotations

import pytest
from django.urls import reverse

from approvals import services


@pytest.mark.django_db
def test_it_flags_a_break_glass_approval_on_the_dashboard(client, admin_user, operator, outsider, prod_request):
    client.force_login(operator)
    assert "Break-glass approvals" not in client.get(reverse("dashboard")).content.decode()

    services.approval_break_glass(request=prod_request, actor=admin_user, reason="prod down, quorum asleep")

    page = client.get(reverse("dashboard")).content.decode()
    assert "Break-glass approvals" in page
    assert "prod down, quorum asleep" in page
    client.force_login(outsider)
    assert "Break-glass approvals" not in client.get(reverse("dashboard")).content.decode()
