"""uebench: a benchmark harness for unlearnable examples (availability poisoning)."""

__version__ = "0.1.0"
