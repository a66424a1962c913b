"""pokegan_ray: train GANs that invent new Pokémon, distributed on Ray."""

__version__ = "0.1.0"
