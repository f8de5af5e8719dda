"""Approvals models arrive with their issue; the app exists now so the layering is fixed from the start."""
