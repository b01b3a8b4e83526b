"""Fixtures of the fault suite (defined in faults_setup, which the tests also import helpers from)."""

from faults_setup import reference, secrets_run  # noqa: F401
