"""Frozen-feature evaluation and export."""
