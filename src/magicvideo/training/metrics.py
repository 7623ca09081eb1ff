"""`metrics.csv` (one row per logged step) and its loss-curve PNG."""

from __future__ import annotations

import csv
from pathlib import Path

FIELDS = ("step", "loss", "lr", "clips_per_s", "skipped")


class MetricsLog:
    def __init__(self, output_dir: str | Path, resume_step: int = 0):
        self.path = Path(output_dir) / "metrics.csv"
        rows = self.rows() if self.path.exists() else []
        kept = [row for row in rows if int(row["step"]) <= resume_step]  # drop steps a killed run did not checkpoint
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(kept)

    def rows(self) -> list[dict]:
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def log(self, step: int, loss: float, lr: float, clips_per_s: float, skipped: int) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow((step, f"{loss:.6g}", f"{lr:.6g}", f"{clips_per_s:.4g}", skipped))

    def plot(self, png: str | Path | None = None) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        png = Path(png or self.path.with_name("loss.png"))
        rows = self.rows()
        steps = [int(r["step"]) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
        if len(losses) >= 10:
            width = max(5, len(losses) // 20)
            smooth = [sum(losses[max(0, i - width + 1) : i + 1]) / len(losses[max(0, i - width + 1) : i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, lw=1.5, label=f"mean of {width}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log" if losses and min(losses) > 0 else "linear")
        ax.legend()
        fig.tight_layout()
        fig.savefig(png)
        plt.close(fig)
        return png
