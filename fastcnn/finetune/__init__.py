"""On-device fine-tuning of a model's classifier head (see `fastcnn.finetune.tuner`)."""
from fastcnn.finetune.tuner import FineTuner, FineTuneWarning

__all__ = ["FineTuner", "FineTuneWarning"]
