"""``standard``: plain training with the trainer's crop+flip augmentation (the papers' NT)."""
from bench.api import DEFENSES, Defense


@DEFENSES.register(
    "standard",
    description="Standard training (random crop + flip), no countermeasure",
    reference="Huang et al. ICLR 2021, main.py",
    category="baseline",
)
class Standard(Defense):
    pass
