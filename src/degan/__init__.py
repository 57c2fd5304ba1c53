"""degan: data-efficient GAN training: DiffAugment, GAN lottery tickets, AdvAug, RG-GAN."""

__version__ = "0.1.0"
