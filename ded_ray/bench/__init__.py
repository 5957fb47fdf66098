"""Stage benchmarks behind `ded bench NAME`.

Each module here defines `run(quick: bool = False) -> list[dict]`: one dict per measured figure with keys
`benchmark`, `case`, `metric`, `value`, `unit` and optionally `ratio` (to the case named in `baseline`) and
`note`. Figures are taken side by side in one run, so ratios are meaningful on a shared, noisy machine.
"""

BENCHMARKS = ("rollout", "verify", "diversity", "train", "runner")
