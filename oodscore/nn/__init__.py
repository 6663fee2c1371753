"""Modules: spectral normalization, the MOS group-softmax head, feature capture."""

__all__: list[str] = []
