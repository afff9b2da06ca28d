"""Helpers shared by the test packages: one home each, imported by tests and never by the product."""
