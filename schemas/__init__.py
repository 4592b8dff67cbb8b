"""The record contract shared by the pipelines and the training package."""
