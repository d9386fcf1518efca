"""Data preparation for violet: frame extraction into a clip store and
annotation validation/conversion into Hugging Face datasets.

Run everything with ``python -m prepare DATA``.
"""
