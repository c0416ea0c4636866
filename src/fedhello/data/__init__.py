"""Datasets, tokenisation and client partitions."""
