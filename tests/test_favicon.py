"""The tab icon: browsers ask /favicon.ico of every page, signed in or not, the console's included."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_it_serves_the_icon_as_svg_to_anyone_and_lets_browsers_keep_it(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert "public" in response["Cache-Control"] and "max-age=86400" in response["Cache-Control"]
    assert ET.fromstring(response.content).tag == "{http://www.w3.org/2000/svg}svg"
    assert client.post("/favicon.ico").status_code == 405


def test_it_links_the_icon_from_the_pages(client, operator):
    client.force_login(operator)

    page = client.get(reverse("dashboard")).content.decode()

    assert f'<link rel="icon" href="{reverse("favicon")}" type="image/svg+xml">' in page
