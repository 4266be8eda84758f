"""Option parsing shared by sibling commands (predict, report)."""

from __future__ import annotations

from moetrace.errors import ParameterError
from moetrace.predictors.base import PredictorOptions
from moetrace.trace import read_trace


def parse_int_list(text: str, option: str) -> list[int]:
    """'1000,2000' -> [1000, 2000]; every value must be a positive integer."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"{option} takes comma-separated integers, got '{text}'") from None
    if not values or min(values) <= 0:
        raise ParameterError(f"{option} takes positive integers, got '{text}'")
    return values


def parse_order(text: str | None) -> tuple[int, int, int] | None:
    """'5,1,5' -> (5, 1, 5); None or 'auto' -> None (chosen from the data)."""
    if text is None or text == "auto":
        return None
    try:
        p, d, q = (int(v) for v in text.split(","))
    except ValueError:
        raise ParameterError(f"--order takes p,d,q (for example 5,1,5) or auto, got '{text}'") \
            from None
    if min(p, d, q) < 0 or d > 2:
        raise ParameterError(f"--order needs p, q >= 0 and 0 <= d <= 2, got '{text}'")
    return p, d, q


def predictor_options(*, window: int | None, bucket: int | None, order: str | None, seed: int,
                      train_trace: str | None) -> PredictorOptions:
    """PredictorOptions from the CLI's shared options; reads --train-trace if given."""
    for name, value in (("--window", window), ("--bucket", bucket)):
        if value is not None and value <= 0:
            raise ParameterError(f"{name} must be a positive number of steps, got {value}")
    train = read_trace(train_trace).loads() if train_trace else None
    return PredictorOptions(window=window, bucket=bucket, order=parse_order(order), seed=seed,
                            train=train)
