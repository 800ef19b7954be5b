"""Makes `train_reference.py` (the independent numpy reference of fine-tuning) importable."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
