"""Makes `act_reference.py` importable from the kernel tests."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
