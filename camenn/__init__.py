"""CameNN: cross-modal alignment with a mixture of transformer experts for intra-city retail ranking."""

__version__ = "0.1.0"
