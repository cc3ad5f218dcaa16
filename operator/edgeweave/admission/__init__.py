"""Semantic admission checks (pure); the webhook that runs them is handlers/admission.py."""
