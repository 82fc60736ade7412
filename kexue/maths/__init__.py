"""Mathematical posts of the blog, computed and checked: n random points of a disc in one sector of angle θ
(:mod:`kexue.maths.sector`)."""
from kexue.maths.sector import (sector_monte_carlo, sector_probability, sector_probability_exact,  # noqa: F401
                                smallest_sector)
