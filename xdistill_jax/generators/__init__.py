"""Synthetic paired-modality generators; each gap parameter is a traced value."""
