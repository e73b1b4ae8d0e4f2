"""Unified token-mixer backbones."""
