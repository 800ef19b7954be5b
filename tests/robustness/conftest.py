"""Makes the fuzzing helpers in this folder (fuzz_seeds, fuzz_mutators, fuzz_runner) importable
from the robustness tests."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
