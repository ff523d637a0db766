"""uebench: a benchmark harness for unlearnable examples (availability poisoning)."""

__version__ = "0.2.0"
