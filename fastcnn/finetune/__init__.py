"""On-device fine-tuning of a model's classifier head."""
