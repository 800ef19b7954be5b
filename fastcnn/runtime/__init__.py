"""Runtime: turn an inferred graph into a plan (kernels chosen, weights packed, arena laid out)
and run it."""
