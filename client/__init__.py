"""Clients of the CARFAC service: streaming CLI, live view and browser page."""
