"""The figures Cong et al. (arXiv 2404.16914) report on their own traces, for comparison.

These are the paper's numbers, not moetrace's: measured on the authors' GPT-3 125M / 350M
runs (never released), with an error the paper calls "the mean of the error ratio" and gives
no formula for. Source: shared/paper-notes.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CITATION = ("Cong et al., Prediction Is All MoE Needs: Expert Load Distribution Goes from "
            "Fluctuating to Stabilizing, arXiv 2404.16914 (2024)")
CAVEAT = ("These are the paper's figures on its own traces (not released). The paper calls its "
          "error \"the mean of the error ratio\" of each MoE layer's prediction and gives no "
          "formula (absolute or relative, per step or per window), so the comparison is "
          "indicative: moetrace's error rate and mean error ratio are two precise readings of it.")


@dataclass(frozen=True)
class PaperFigure:
    """One reported error: model, moetrace predictor name, horizon in steps, error as a fraction."""

    model: str
    predictor: str
    horizon: int
    error: float
    qualifier: str  # "about", "under"
    note: str = "stable state"

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        return f"{self.qualifier} {self.error * 100:g}%"


FIGURES = (
    PaperFigure("GPT-3 125M", "sw_avg", 1000, 0.0025, "about"),
    PaperFigure("GPT-3 125M", "arima", 1000, 0.005, "about", "stable state; ARIMA(5,1,5)"),
    PaperFigure("GPT-3 125M", "lstm", 1000, 0.01, "under", "after about 5,000 iterations"),
    PaperFigure("GPT-3 350M", "sw_avg", 1000, 0.013, "about"),
    PaperFigure("GPT-3 350M", "sw_avg", 2000, 0.017, "about", "stable state; 1.8% in the abstract"),
    PaperFigure("GPT-3 350M", "arima", 1000, 0.014, "about"),
    PaperFigure("GPT-3 350M", "lstm", 1000, 0.10, "under",
                "per 1,000-iteration block, from the second block"),
)


def closest_model(n_experts: int) -> str:
    """The paper's setup nearest to a trace: 350M has 128 experts per layer, 125M has 16."""
    return "GPT-3 350M" if n_experts >= 64 else "GPT-3 125M"
