"""The user's code, read with ``ast``: never imported, never executed.

One job per module: ``source`` (reading a side of the checkout, bounds), ``parse`` (each file once, by content),
``imports`` (the run's import path), ``sites`` (perf-relevant code), ``args`` (the checkout's parser replayed),
``env_reads`` and ``launchers`` (who reads and who sets env vars), ``checkout`` (which folder and entry),
``compare`` (the code side of a branch comparison) and ``probe`` (all of it into ``RepoFacts``).
"""
