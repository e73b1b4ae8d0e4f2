"""Datasets shared by pretraining and evaluation."""
