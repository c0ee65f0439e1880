"""Durable state: committed group specs and in-flight operations."""
