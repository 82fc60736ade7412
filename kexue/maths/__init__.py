"""Two mathematical posts of the blog, computed and checked: n random points of a disc in one sector of
angle θ (:mod:`kexue.maths.sector`) and the "cross" colouring count (:mod:`kexue.maths.cross`)."""
from kexue.maths.cross import count_brute_force, count_by_enumeration, count_formula, dominant  # noqa: F401
from kexue.maths.sector import (sector_monte_carlo, sector_probability, sector_probability_exact,  # noqa: F401
                                smallest_sector)
