"""The guards' parts: op registry, per-op inspection, casts, residency, step clock and NVML sampler.

``wanrun.guard`` assembles them; each part here is small, torch-aware and knows nothing of rules or output.
"""
