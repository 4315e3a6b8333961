"""The trainer's optional per-stage hooks (model/train.py calls them on every task), as no-ops to inherit."""

from __future__ import annotations


class TaskHooks:
    """A stage task overrides the hooks it needs: the dVAE its EMA and schedules, CLIP its temperature clamp."""

    def extra_metrics(self, step: int) -> dict:  # logged beside the loss
        return {}

    def after_step(self) -> None:  # after each optimizer step
        pass

    def extra_state(self) -> dict:  # saved in each checkpoint beside model and optimizer
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def export_weights(self) -> dict | None:  # weights to export instead of the model's own (e.g. an EMA)
        return None
