"""The enforcer service."""
